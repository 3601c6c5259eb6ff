package dnsproxy

import (
	"context"
	"errors"
	"fmt"
	"net/netip"
	"slices"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/miekg/dns"
)

// testZone is the upstream's data in most tests.
var testZone = []string{
	"www.example. 300 IN A 192.0.2.10",
	"www.example. 300 IN AAAA 2001:db8::10",
	"alias.example. 300 IN CNAME www.example.",
	"alias2.example. 120 IN CNAME alias.example.",
	`txt.example. 300 IN TXT "v=spf1 " "-all"`,
	"_svc._tcp.example. 300 IN SRV 10 5 8080 www.example.",
	"v4only.example. 300 IN A 192.0.2.11",
	"private.example. 300 IN A 10.0.0.1",
	"mixed.example. 300 IN A 10.0.0.2",
	"mixed.example. 300 IN A 192.0.2.12",
	"loopback6.example. 300 IN AAAA ::1",
	"mapped.example. 300 IN AAAA ::ffff:10.0.0.1",
	"toprivate.example. 300 IN CNAME private.example.",
	"loop1.example. 300 IN CNAME loop2.example.",
	"loop2.example. 300 IN CNAME loop1.example.",
	"short.example. 1 IN A 192.0.2.14",
	"long.example. 86400 IN A 192.0.2.15",
	"ttl60.example. 60 IN A 192.0.2.16",
	"dangling.example. 300 IN CNAME gone.example.",
}

func init() {
	// chain0 -> chain1 -> ... -> chain10, which has an address: 10 CNAMEs.
	for i := range 10 {
		testZone = append(testZone, fmt.Sprintf("chain%d.example. 300 IN CNAME chain%d.example.", i, i+1))
	}
	testZone = append(testZone, "chain10.example. 300 IN A 192.0.2.13")
}

func values(ans Answer) []string {
	var out []string
	for _, rec := range ans.Records {
		out = append(out, rec.String())
	}
	slices.Sort(out)
	return out
}

func TestResolveRecordTypes(t *testing.T) {
	up := newUpstreamServer(t, testZone...)
	r := newTestResolver(t, testConfig(up, nil), nil, nil)
	for _, tc := range []struct {
		name  string
		qtype uint16
		want  []string
		chain []string
	}{
		{"www.example", dns.TypeA, []string{"192.0.2.10"}, nil},
		{"WWW.Example.", dns.TypeAAAA, []string{"2001:db8::10"}, nil},
		{"www.example", TypeAddresses, []string{"192.0.2.10", "2001:db8::10"}, nil},
		{"alias.example", dns.TypeA, []string{"192.0.2.10"}, []string{"www.example."}},
		{"alias2.example", TypeAddresses, []string{"192.0.2.10", "2001:db8::10"}, []string{"alias.example.", "www.example."}},
		{"alias.example", dns.TypeCNAME, []string{"www.example"}, nil},
		{"txt.example", dns.TypeTXT, []string{"v=spf1 -all"}, nil},
		{"_svc._tcp.example", dns.TypeSRV, []string{"10 5 8080 www.example"}, nil},
		{"v4only.example", TypeAddresses, []string{"192.0.2.11"}, nil},
		{"chain2.example", dns.TypeA, []string{"192.0.2.13"}, []string{"chain3.example.", "chain4.example.", "chain5.example.", "chain6.example.", "chain7.example.", "chain8.example.", "chain9.example.", "chain10.example."}},
	} {
		t.Run(fmt.Sprintf("%s/%s", tc.name, typeName(tc.qtype)), func(t *testing.T) {
			ans, err := r.Resolve(t.Context(), "alice", tc.name, tc.qtype)
			if err != nil {
				t.Fatal(err)
			}
			if got := values(ans); !slices.Equal(got, tc.want) {
				t.Errorf("records %q, want %q", got, tc.want)
			}
			if !slices.Equal(ans.Chain, tc.chain) {
				t.Errorf("chain %q, want %q", ans.Chain, tc.chain)
			}
			if ans.TTL <= 0 || ans.TTL > 300*time.Second {
				t.Errorf("TTL %s out of the records' bounds", ans.TTL)
			}
		})
	}
}

func TestResolveErrors(t *testing.T) {
	up := newUpstreamServer(t, testZone...)
	r := newTestResolver(t, testConfig(up, nil), nil, nil)
	for _, tc := range []struct {
		name     string
		qtype    uint16
		want     error
		contains string
	}{
		{"nosuch.example", dns.TypeA, ErrNotFound, "nosuch.example"},
		{"dangling.example", dns.TypeA, ErrNotFound, "dangling.example -> gone.example"},
		{"v4only.example", dns.TypeAAAA, ErrNoRecords, "no AAAA records"},
		{"txt.example", TypeAddresses, ErrNoRecords, "no A or AAAA"},
		{"private.example", dns.TypeA, ErrAllAddressesRefused, "rule: RFC 1918"},
		{"private.example", TypeAddresses, ErrAllAddressesRefused, "10.0.0.1"},
		{"toprivate.example", dns.TypeA, ErrAllAddressesRefused, "rule: RFC 1918"},
		{"loopback6.example", dns.TypeAAAA, ErrAllAddressesRefused, "rule: loopback"},
		{"mapped.example", dns.TypeAAAA, ErrAllAddressesRefused, "rule: RFC 1918"}, // the policy sees the address as sent
		{"loop1.example", dns.TypeA, ErrCNAMEChain, "loops"},
		{"chain0.example", dns.TypeA, ErrCNAMEChain, "more than 8 CNAMEs"},
		{"bad..example", dns.TypeA, ErrInvalidName, "empty label"},
		{"10.0.0.1", dns.TypeA, ErrInvalidName, "IP address"},
		{"www.example", dns.TypeMX, ErrInvalidType, "use A, AAAA"},
	} {
		t.Run(fmt.Sprintf("%s/%s", tc.name, typeName(tc.qtype)), func(t *testing.T) {
			_, err := r.Resolve(t.Context(), "alice", tc.name, tc.qtype)
			if !errors.Is(err, tc.want) {
				t.Fatalf("error %v, want %v", err, tc.want)
			}
			if !strings.Contains(err.Error(), tc.contains) {
				t.Errorf("error %q does not say %q", err, tc.contains)
			}
		})
	}
}

func TestPrivateAddressesLeftOut(t *testing.T) {
	up := newUpstreamServer(t, testZone...)
	r := newTestResolver(t, testConfig(up, nil), nil, nil)
	ans, err := r.Resolve(t.Context(), "alice", "mixed.example", TypeAddresses)
	if err != nil {
		t.Fatal(err)
	}
	if got := values(ans); !slices.Equal(got, []string{"192.0.2.12"}) {
		t.Errorf("records %q, want only the public address", got)
	}
	if !slices.Equal(ans.Refused, []netip.Addr{netip.MustParseAddr("10.0.0.2")}) {
		t.Errorf("refused %v, want 10.0.0.2", ans.Refused)
	}
}

func TestCNAMELoopIsBounded(t *testing.T) {
	up := newUpstreamServer(t, testZone...)
	r := newTestResolver(t, testConfig(up, nil), nil, nil)
	for range 3 {
		if _, err := r.Resolve(t.Context(), "", "loop1.example", dns.TypeA); !errors.Is(err, ErrCNAMEChain) {
			t.Fatalf("error %v, want ErrCNAMEChain", err)
		}
	}
	// The loop is learned from one answer, then from the cache.
	if n := up.totalQueries(); n != 1 {
		t.Errorf("upstream asked %d times for a CNAME loop, want 1", n)
	}
}

func TestCacheAnswersRepeatedQuestions(t *testing.T) {
	up := newUpstreamServer(t, testZone...)
	r := newTestResolver(t, testConfig(up, nil), nil, nil)
	for range 5 {
		if _, err := r.Resolve(t.Context(), "alice", "alias2.example", dns.TypeA); err != nil {
			t.Fatal(err)
		}
		// The chain's names were learned from the first answer.
		if _, err := r.Resolve(t.Context(), "bob", "www.example", dns.TypeA); err != nil {
			t.Fatal(err)
		}
	}
	if n := up.asked("alias2.example", dns.TypeA); n != 1 {
		t.Errorf("upstream asked %d times about alias2.example, want 1", n)
	}
	if n := up.totalQueries(); n != 1 {
		t.Errorf("upstream asked %d questions, want 1", n)
	}
}

func TestCacheHonoursTTLs(t *testing.T) {
	up := newUpstreamServer(t, testZone...)
	clock := newTestClock()
	cfg := testConfig(up, clock)
	cfg.MinTTL, cfg.MaxTTL = 5*time.Second, time.Hour
	r := newTestResolver(t, cfg, nil, nil)
	for _, tc := range []struct {
		name string
		ttl  time.Duration // the TTL the cache keeps it for
	}{
		{"ttl60.example", 60 * time.Second},
		{"short.example", 5 * time.Second}, // 1 s, raised to MinTTL
		{"long.example", time.Hour},        // a day, lowered to MaxTTL
	} {
		t.Run(tc.name, func(t *testing.T) {
			ans, err := r.Resolve(t.Context(), "", tc.name, dns.TypeA)
			if err != nil {
				t.Fatal(err)
			}
			if ans.TTL != tc.ttl {
				t.Errorf("first TTL %s, want %s", ans.TTL, tc.ttl)
			}
			clock.Advance(tc.ttl - 2*time.Second)
			ans, err = r.Resolve(t.Context(), "", tc.name, dns.TypeA)
			if err != nil {
				t.Fatal(err)
			}
			if ans.TTL != 2*time.Second {
				t.Errorf("TTL from the cache %s, want the 2s left", ans.TTL)
			}
			if n := up.asked(tc.name, dns.TypeA); n != 1 {
				t.Errorf("asked upstream %d times before expiry, want 1", n)
			}
			clock.Advance(2 * time.Second)
			if _, err := r.Resolve(t.Context(), "", tc.name, dns.TypeA); err != nil {
				t.Fatal(err)
			}
			if n := up.asked(tc.name, dns.TypeA); n != 2 {
				t.Errorf("asked upstream %d times after expiry, want 2", n)
			}
		})
	}
}

func TestNegativeCaching(t *testing.T) {
	for _, tc := range []struct {
		name     string
		qtype    uint16
		maxNeg   time.Duration
		want     error
		cacheFor time.Duration // the SOA says 30 s: min(TTL 60, MINIMUM 30)
	}{
		{"nosuch.example", dns.TypeA, time.Minute, ErrNotFound, 30 * time.Second},
		{"v4only.example", dns.TypeAAAA, time.Minute, ErrNoRecords, 30 * time.Second},
		{"nosuch.example", dns.TypeA, 10 * time.Second, ErrNotFound, 10 * time.Second},
	} {
		t.Run(fmt.Sprintf("%s/%s/cap %s", tc.name, typeName(tc.qtype), tc.maxNeg), func(t *testing.T) {
			up := newUpstreamServer(t, testZone...)
			clock := newTestClock()
			cfg := testConfig(up, clock)
			cfg.MaxNegativeTTL = tc.maxNeg
			r := newTestResolver(t, cfg, nil, nil)
			for range 3 {
				if _, err := r.Resolve(t.Context(), "", tc.name, tc.qtype); !errors.Is(err, tc.want) {
					t.Fatalf("error %v, want %v", err, tc.want)
				}
			}
			clock.Advance(tc.cacheFor - time.Second)
			if _, err := r.Resolve(t.Context(), "", tc.name, tc.qtype); !errors.Is(err, tc.want) {
				t.Fatalf("error %v, want %v", err, tc.want)
			}
			if n := up.asked(tc.name, tc.qtype); n != 1 {
				t.Errorf("asked upstream %d times within the negative TTL, want 1", n)
			}
			clock.Advance(time.Second)
			_, _ = r.Resolve(t.Context(), "", tc.name, tc.qtype)
			if n := up.asked(tc.name, tc.qtype); n != 2 {
				t.Errorf("asked upstream %d times after the negative TTL, want 2", n)
			}
		})
	}
}

func TestConcurrentMissesShareOneQuery(t *testing.T) {
	up := newUpstreamServer(t, testZone...)
	gate := make(chan struct{})
	up.configure(func() { up.gate = gate })
	r := newTestResolver(t, testConfig(up, nil), nil, nil)
	const callers = 20
	var wg sync.WaitGroup
	errs := make(chan error, callers)
	for range callers {
		wg.Go(func() {
			_, err := r.Resolve(context.Background(), "", "www.example", dns.TypeA)
			errs <- err
		})
	}
	// Let the callers pile up behind the first query, then answer it.
	deadline := time.Now().Add(30 * time.Second)
	for up.totalQueries() == 0 && time.Now().Before(deadline) {
		time.Sleep(time.Millisecond)
	}
	time.Sleep(50 * time.Millisecond)
	close(gate)
	wg.Wait()
	close(errs)
	for err := range errs {
		if err != nil {
			t.Fatal(err)
		}
	}
	if n := up.totalQueries(); n != 1 {
		t.Errorf("%d concurrent misses made %d upstream queries, want 1", callers, n)
	}
}

func TestCallerGivingUpDoesNotFailOthers(t *testing.T) {
	up := newUpstreamServer(t, testZone...)
	gate := make(chan struct{})
	up.configure(func() { up.gate = gate })
	r := newTestResolver(t, testConfig(up, nil), nil, nil)
	leader := make(chan error, 1)
	go func() {
		_, err := r.Resolve(context.Background(), "", "www.example", dns.TypeA)
		leader <- err
	}()
	for up.totalQueries() == 0 {
		time.Sleep(time.Millisecond)
	}
	ctx, cancel := context.WithCancel(context.Background())
	cancel()
	if _, err := r.Resolve(ctx, "", "www.example", dns.TypeA); !errors.Is(err, context.Canceled) {
		t.Errorf("a canceled waiter got %v, want context.Canceled", err)
	}
	close(gate)
	if err := <-leader; err != nil {
		t.Errorf("the first caller failed: %v", err)
	}
}

func TestUpstreamFailover(t *testing.T) {
	up := newUpstreamServer(t, testZone...)
	broken := newUpstreamServer(t)
	broken.configure(func() { broken.rcode = dns.RcodeServerFailure })
	cfg := testConfig(up, nil)
	cfg.Upstreams = []string{broken.addr, up.addr}
	r := newTestResolver(t, cfg, nil, nil)
	ans, err := r.Resolve(t.Context(), "", "www.example", dns.TypeA)
	if err != nil {
		t.Fatal(err)
	}
	if got := values(ans); !slices.Equal(got, []string{"192.0.2.10"}) {
		t.Errorf("records %q", got)
	}

	cfg.Upstreams = []string{broken.addr}
	r = newTestResolver(t, cfg, nil, nil)
	_, err = r.Resolve(t.Context(), "", "www.example", dns.TypeA)
	if !errors.Is(err, ErrUpstream) || !strings.Contains(err.Error(), "SERVFAIL") {
		t.Errorf("error %v, want ErrUpstream saying SERVFAIL", err)
	}
}

func TestUpstreamTruncatedAnswerRetriedOverTCP(t *testing.T) {
	zone := []string{}
	for i := range 40 {
		zone = append(zone, fmt.Sprintf(`big.example. 300 IN TXT "%s-%02d"`, strings.Repeat("x", 60), i))
	}
	up := newUpstreamServer(t, zone...)
	r := newTestResolver(t, testConfig(up, nil), nil, nil)
	ans, err := r.Resolve(t.Context(), "", "big.example", dns.TypeTXT)
	if err != nil {
		t.Fatal(err)
	}
	if len(ans.Records) != 40 {
		t.Errorf("%d TXT records, want all 40 (the UDP answer was truncated, TCP has them all)", len(ans.Records))
	}
}

func TestAllowlist(t *testing.T) {
	up := newUpstreamServer(t, testZone...)
	allow := func(user, name string) error {
		if user == "alice" && name == "www.example." {
			return nil
		}
		return fmt.Errorf("%s may resolve only www.example (rule: allowlist of %s)", user, user)
	}
	dir := fakeDirectory{"add": {netip.MustParseAddrPort("127.0.0.1:50052")}}
	r := newTestResolver(t, testConfig(up, nil), allow, dir)
	if _, err := r.Resolve(t.Context(), "alice", "WWW.example.", dns.TypeA); err != nil {
		t.Errorf("allowed name: %v", err)
	}
	_, err := r.Resolve(t.Context(), "alice", "alias.example", dns.TypeA)
	if !errors.Is(err, ErrNameRefused) || !strings.Contains(err.Error(), "rule: allowlist") {
		t.Errorf("name off the list: %v, want ErrNameRefused naming the rule", err)
	}
	if _, err := r.Resolve(t.Context(), "bob", "www.example", dns.TypeA); !errors.Is(err, ErrNameRefused) {
		t.Errorf("another user: %v, want ErrNameRefused", err)
	}
	if n := up.asked("alias.example", dns.TypeA); n != 0 {
		t.Errorf("a refused name was asked upstream %d times", n)
	}
	// The network's own zone is not subject to the allowlist.
	if _, err := r.Resolve(t.Context(), "bob", "add.fn.taskworker.internal", dns.TypeA); err != nil {
		t.Errorf("zone name: %v", err)
	}
}

func TestCacheIsBounded(t *testing.T) {
	up := newUpstreamServer(t)
	up.configure(func() { up.wildcard = "bench.example." })
	cfg := testConfig(up, nil)
	cfg.CacheEntries = 10
	r := newTestResolver(t, cfg, nil, nil)
	for i := range 50 {
		if _, err := r.Resolve(t.Context(), "", fmt.Sprintf("n%d.bench.example", i), dns.TypeA); err != nil {
			t.Fatal(err)
		}
	}
	if n := r.cache.len(); n != 10 {
		t.Errorf("cache holds %d entries, want its bound 10", n)
	}
	// The most recent are kept, the oldest were dropped.
	before := up.totalQueries()
	_, _ = r.Resolve(t.Context(), "", "n49.bench.example", dns.TypeA)
	_, _ = r.Resolve(t.Context(), "", "n0.bench.example", dns.TypeA)
	if n := up.totalQueries() - before; n != 1 {
		t.Errorf("%d upstream queries for one recent and one evicted name, want 1", n)
	}
}

func TestNoUpstream(t *testing.T) {
	cfg := DefaultConfig()
	cfg.ResolvConf = t.TempDir() + "/missing.conf"
	r := newTestResolver(t, cfg, nil, nil)
	_, err := r.Resolve(t.Context(), "", "www.example", dns.TypeA)
	if !errors.Is(err, ErrUpstream) || !strings.Contains(err.Error(), "configure upstream resolvers") {
		t.Errorf("error %v, want ErrUpstream saying what to configure", err)
	}
}

func TestNewRefusesMissingPolicy(t *testing.T) {
	if _, err := New(DefaultConfig(), nil, nil, nil); err == nil || !strings.Contains(err.Error(), "egress policy") {
		t.Errorf("New without a policy: %v", err)
	}
}
