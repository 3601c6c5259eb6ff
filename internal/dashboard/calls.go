package dashboard

import (
	"context"
	"math"
	"sync"
	"time"

	"github.com/prometheus/client_golang/prometheus"
	dto "github.com/prometheus/client_model/go"
)

// CallSample is the network's calls over one sampling interval.
type CallSample struct {
	Time    time.Time `json:"time"`
	PerSec  float64   `json:"per_sec"`
	Errors  float64   `json:"errors_per_sec"`
	P50Ms   float64   `json:"p50_ms"`
	P99Ms   float64   `json:"p99_ms"`
	Elapsed float64   `json:"-"`
}

// Metric names the sampler reads: the pool's call counter and histogram.
const (
	callsMetric   = "taskworker_calls_total"
	latencyMetric = "taskworker_call_duration_seconds"
)

// sampler keeps the last samples of a registry's call metrics.
type sampler struct {
	g    prometheus.Gatherer
	keep int

	mu      sync.Mutex
	samples []CallSample
	last    *reading
}

// reading is the cumulative state of the call metrics at one time.
type reading struct {
	at      time.Time
	calls   float64
	errors  float64
	buckets []bucket // cumulative, ascending bounds, all label sets added
}

type bucket struct {
	le    float64
	count float64
}

func newSampler(g prometheus.Gatherer, keep int) *sampler {
	return &sampler{g: g, keep: keep}
}

func (s *sampler) run(ctx context.Context, every time.Duration) {
	t := time.NewTicker(every)
	defer t.Stop()
	s.sample(time.Now())
	for {
		select {
		case <-ctx.Done():
			return
		case now := <-t.C:
			s.sample(now)
		}
	}
}

func (s *sampler) history() []CallSample {
	s.mu.Lock()
	defer s.mu.Unlock()
	return append([]CallSample(nil), s.samples...)
}

func (s *sampler) sample(now time.Time) {
	r, err := read(s.g, now)
	if err != nil {
		return
	}
	s.mu.Lock()
	defer s.mu.Unlock()
	if s.last != nil {
		s.samples = append(s.samples, between(s.last, r))
		if len(s.samples) > s.keep {
			s.samples = s.samples[len(s.samples)-s.keep:]
		}
	}
	s.last = r
}

func read(g prometheus.Gatherer, now time.Time) (*reading, error) {
	families, err := g.Gather()
	if err != nil {
		return nil, err
	}
	r := &reading{at: now}
	for _, f := range families {
		switch f.GetName() {
		case callsMetric:
			for _, m := range f.Metric {
				v := m.GetCounter().GetValue()
				r.calls += v
				if label(m, "code") != "OK" {
					r.errors += v
				}
			}
		case latencyMetric:
			for _, m := range f.Metric {
				for i, b := range m.GetHistogram().GetBucket() {
					if i == len(r.buckets) {
						r.buckets = append(r.buckets, bucket{le: b.GetUpperBound()})
					}
					r.buckets[i].count += float64(b.GetCumulativeCount())
				}
			}
		}
	}
	return r, nil
}

func label(m *dto.Metric, name string) string {
	for _, l := range m.GetLabel() {
		if l.GetName() == name {
			return l.GetValue()
		}
	}
	return ""
}

// between is the sample of the interval from a to b.
func between(a, b *reading) CallSample {
	secs := b.at.Sub(a.at).Seconds()
	s := CallSample{Time: b.at.UTC(), Elapsed: secs}
	if secs <= 0 {
		return s
	}
	s.PerSec = (b.calls - a.calls) / secs
	s.Errors = (b.errors - a.errors) / secs
	// No buckets before: no call had been observed yet.
	if len(a.buckets) == len(b.buckets) || len(a.buckets) == 0 {
		delta := make([]bucket, len(b.buckets))
		for i := range b.buckets {
			delta[i] = b.buckets[i]
			if len(a.buckets) > 0 {
				delta[i].count -= a.buckets[i].count
			}
		}
		s.P50Ms = quantile(delta, 0.50) * 1000
		s.P99Ms = quantile(delta, 0.99) * 1000
	}
	return s
}

// quantile estimates the q-quantile of cumulative buckets by linear
// interpolation within the bucket it falls in, as Prometheus's
// histogram_quantile does; 0 when the buckets are empty.
func quantile(buckets []bucket, q float64) float64 {
	if len(buckets) == 0 {
		return 0
	}
	total := buckets[len(buckets)-1].count
	if total <= 0 {
		return 0
	}
	rank := q * total
	lower, below := 0.0, 0.0
	for _, b := range buckets {
		if b.count >= rank {
			if math.IsInf(b.le, 1) {
				return lower
			}
			in := b.count - below
			if in <= 0 {
				return b.le
			}
			return lower + (b.le-lower)*(rank-below)/in
		}
		lower, below = b.le, b.count
	}
	return lower
}
