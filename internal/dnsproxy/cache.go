package dnsproxy

import (
	"container/list"
	"sync"
	"time"

	"github.com/miekg/dns"
)

// cacheKey names one question: a normalized name and a record type.
type cacheKey struct {
	name  string
	qtype uint16
}

// rrset is what is known of one question, from the cache or an upstream.
// Exactly one of these holds: cname is set (the name is an alias, and the
// question continues at cname), records is not empty (the answer), or the
// name has no records of the type (rcode says whether it exists at all).
type rrset struct {
	cname   string
	records []dns.RR // owned by the question's name, of its type; never modified
	rcode   int      // dns.RcodeSuccess or dns.RcodeNameError
	expires time.Time
}

// cache keeps rrsets until they expire, at most max of them, dropping the
// least recently used first.
type cache struct {
	mu    sync.Mutex
	max   int
	order *list.List // front: most recently used; values are *cacheItem
	items map[cacheKey]*list.Element
}

type cacheItem struct {
	key cacheKey
	set rrset
}

func newCache(max int) *cache {
	return &cache{max: max, order: list.New(), items: make(map[cacheKey]*list.Element)}
}

// get returns the rrset for k if it has not expired at now.
func (c *cache) get(k cacheKey, now time.Time) (rrset, bool) {
	c.mu.Lock()
	defer c.mu.Unlock()
	el, ok := c.items[k]
	if !ok {
		return rrset{}, false
	}
	it := el.Value.(*cacheItem)
	if !now.Before(it.set.expires) {
		c.order.Remove(el)
		delete(c.items, k)
		return rrset{}, false
	}
	c.order.MoveToFront(el)
	return it.set, true
}

// put stores s under k, replacing what was there.
func (c *cache) put(k cacheKey, s rrset) {
	c.mu.Lock()
	defer c.mu.Unlock()
	if el, ok := c.items[k]; ok {
		el.Value.(*cacheItem).set = s
		c.order.MoveToFront(el)
		return
	}
	c.items[k] = c.order.PushFront(&cacheItem{key: k, set: s})
	for c.order.Len() > c.max {
		last := c.order.Back()
		c.order.Remove(last)
		delete(c.items, last.Value.(*cacheItem).key)
	}
}

// len is the number of entries held, expired or not.
func (c *cache) len() int {
	c.mu.Lock()
	defer c.mu.Unlock()
	return c.order.Len()
}

// clampTTL bounds a record's TTL (seconds) to [lo, hi].
func clampTTL(ttl uint32, lo, hi time.Duration) time.Duration {
	d := time.Duration(ttl) * time.Second
	if d < lo {
		d = lo
	}
	if d > hi {
		d = hi
	}
	return d
}

// negativeTTL is how long a NXDOMAIN or NODATA answer may be cached (RFC
// 2308, section 5: the lesser of the SOA's TTL and its MINIMUM field, here
// also capped by max). ok is false when the answer carries no SOA: such
// answers are not cached (RFC 2308, section 5).
func negativeTTL(authority []dns.RR, max time.Duration) (time.Duration, bool) {
	for _, rr := range authority {
		soa, isSOA := rr.(*dns.SOA)
		if !isSOA {
			continue
		}
		ttl := min(soa.Hdr.Ttl, soa.Minttl)
		return min(time.Duration(ttl)*time.Second, max), true
	}
	return 0, false
}
