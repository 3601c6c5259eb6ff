package dnsproxy

import (
	"net/netip"
	"strings"
	"testing"
	"time"

	"github.com/miekg/dns"
)

func TestConfigValidate(t *testing.T) {
	if err := DefaultConfig().Validate(); err != nil {
		t.Fatalf("the default configuration is refused: %v", err)
	}
	for _, tc := range []struct {
		name   string
		change func(*Config)
		says   string
	}{
		{"zone", func(c *Config) { c.Zone = "bad zone" }, "Zone \"bad zone\" is not a domain name"},
		{"upstream", func(c *Config) { c.Upstreams = []string{"192.0.2.53"} }, "write it as 192.0.2.53:53"},
		{"no upstream", func(c *Config) { c.ResolvConf = "" }, "set Upstreams or ResolvConf"},
		{"timeout", func(c *Config) { c.UpstreamTimeout = 0 }, "UpstreamTimeout (0s) must be positive"},
		{"cache", func(c *Config) { c.CacheEntries = 0 }, "CacheEntries (0) must be at least 1"},
		{"ttls", func(c *Config) { c.MinTTL = 2 * time.Hour }, "MinTTL (2h0m0s) must be >= 0 and <= MaxTTL (1h0m0s)"},
		{"negative", func(c *Config) { c.MaxNegativeTTL = -1 }, "0 turns negative caching off"},
		{"zone ttl", func(c *Config) { c.ZoneTTL = time.Millisecond }, "ZoneTTL (1ms) must be at least 1s"},
		{"chain", func(c *Config) { c.MaxCNAMEChain = 0 }, "MaxCNAMEChain (0)"},
		{"rate", func(c *Config) { c.RateBurst = 0 }, "RateBurst (0) at least 1"},
		{"sources", func(c *Config) { c.RateSources = 0 }, "RateSources (0)"},
		{"udp size", func(c *Config) { c.UDPSize = 100 }, "1232 avoids IP fragmentation"},
	} {
		t.Run(tc.name, func(t *testing.T) {
			c := DefaultConfig()
			tc.change(&c)
			err := c.Validate()
			if err == nil || !strings.Contains(err.Error(), tc.says) {
				t.Errorf("Validate() = %v, want it to say %q", err, tc.says)
			}
			if _, err := New(c, testPolicy, nil, nil); err == nil {
				t.Error("New accepted the configuration")
			}
		})
	}
}

func TestResolvConfUpstreams(t *testing.T) {
	path := t.TempDir() + "/resolv.conf"
	writeFile(t, path, "nameserver 192.0.2.53\nnameserver 2001:db8::53\noptions ndots:1\n")
	cfg := DefaultConfig()
	cfg.ResolvConf = path
	u := newUpstream(cfg)
	if u.unusable != nil || strings.Join(u.servers, " ") != "192.0.2.53:53 [2001:db8::53]:53" {
		t.Errorf("servers %q (%v)", u.servers, u.unusable)
	}
	writeFile(t, path, "search example\n")
	if u := newUpstream(cfg); u.unusable == nil || !strings.Contains(u.unusable.Error(), "names no nameserver") {
		t.Errorf("no nameserver: %v", u.unusable)
	}
}

func TestRateLimiter(t *testing.T) {
	clock := newTestClock()
	l := newRateLimiter(2, 4, 3, clock.Now)
	a, b := netip.MustParseAddr("192.0.2.1"), netip.MustParseAddr("192.0.2.2")
	for i := range 4 {
		if !l.allow(a) {
			t.Fatalf("query %d within the burst refused", i)
		}
	}
	if l.allow(a) {
		t.Error("a query over the burst allowed")
	}
	if !l.allow(b) {
		t.Error("another source is limited by the first one's queries")
	}
	clock.Advance(500 * time.Millisecond) // one token at 2 a second
	if !l.allow(a) || l.allow(a) {
		t.Error("want exactly one query after half a second")
	}

	// At the source bound, idle sources are forgotten; while none is idle,
	// new sources share one bucket.
	l = newRateLimiter(1, 2, 2, clock.Now)
	c, d, e := netip.MustParseAddr("192.0.2.3"), netip.MustParseAddr("192.0.2.4"), netip.MustParseAddr("192.0.2.5")
	l.allow(a)
	l.allow(b) // a and b tracked, both busy: the bound
	if !l.allow(c) || !l.allow(c) {
		t.Error("a new source over the bound refused while the shared bucket is full")
	}
	if l.allow(d) {
		t.Error("a new source over the bound got a bucket of its own while the shared one is empty")
	}
	clock.Advance(time.Hour) // everyone idle
	if !l.allow(e) {
		t.Error("a new source refused after every bucket refilled")
	}
	if _, ok := l.buckets[e]; !ok {
		t.Error("idle sources were not forgotten to make room")
	}
	if n := len(l.buckets); n > 3 {
		t.Errorf("%d buckets, want at most the bound and the shared one", n)
	}
}

func TestNegativeTTL(t *testing.T) {
	soa := func(ttl, minimum uint32) []dns.RR {
		return []dns.RR{&dns.SOA{Hdr: dns.RR_Header{Name: "example.", Rrtype: dns.TypeSOA, Class: dns.ClassINET, Ttl: ttl}, Minttl: minimum}}
	}
	for _, tc := range []struct {
		authority []dns.RR
		max       time.Duration
		want      time.Duration
		ok        bool
	}{
		{soa(60, 30), time.Minute, 30 * time.Second, true},
		{soa(20, 300), time.Minute, 20 * time.Second, true},
		{soa(3600, 3600), 30 * time.Second, 30 * time.Second, true},
		{nil, time.Minute, 0, false},
	} {
		got, ok := negativeTTL(tc.authority, tc.max)
		if got != tc.want || ok != tc.ok {
			t.Errorf("negativeTTL(%v, %s) = %s, %v; want %s, %v", tc.authority, tc.max, got, ok, tc.want, tc.ok)
		}
	}
}
