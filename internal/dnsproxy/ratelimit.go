package dnsproxy

import (
	"net/netip"
	"sync"
	"time"
)

// rateLimiter is a token bucket per source address: burst queries at once,
// refilled at rate a second. It tracks at most maxSources sources; when
// that many are tracked, it forgets those whose bucket has refilled (idle
// sources), and if none has, a new source shares the bucket of the zero
// address, so a flood of spoofed sources is limited as one.
type rateLimiter struct {
	mu         sync.Mutex
	rate       float64
	burst      float64
	maxSources int
	buckets    map[netip.Addr]*bucket
	now        func() time.Time
}

type bucket struct {
	tokens float64
	last   time.Time
}

func newRateLimiter(rate float64, burst, maxSources int, now func() time.Time) *rateLimiter {
	return &rateLimiter{rate: rate, burst: float64(burst), maxSources: maxSources, buckets: make(map[netip.Addr]*bucket), now: now}
}

// allow takes a token from src's bucket, reporting whether there was one.
func (l *rateLimiter) allow(src netip.Addr) bool {
	l.mu.Lock()
	defer l.mu.Unlock()
	now := l.now()
	b, ok := l.buckets[src]
	if !ok {
		if len(l.buckets) >= l.maxSources {
			l.forgetIdle(now)
		}
		if len(l.buckets) >= l.maxSources {
			src = netip.Addr{}
			b = l.buckets[src]
		}
		if b == nil {
			b = &bucket{tokens: l.burst, last: now}
			l.buckets[src] = b
		}
	}
	b.tokens = min(l.burst, b.tokens+now.Sub(b.last).Seconds()*l.rate)
	b.last = now
	if b.tokens < 1 {
		return false
	}
	b.tokens--
	return true
}

// forgetIdle drops the buckets that have refilled: forgetting them changes
// nothing, a new bucket starts full.
func (l *rateLimiter) forgetIdle(now time.Time) {
	for src, b := range l.buckets {
		if b.tokens+now.Sub(b.last).Seconds()*l.rate >= l.burst {
			delete(l.buckets, src)
		}
	}
}
