package dnsproxy

import (
	"fmt"
	"net/netip"
	"os"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/miekg/dns"
)

// testSOA is the authority record of the test server's negative answers:
// they may be cached min(60, 30) = 30 seconds.
const testSOA = "example. 60 IN SOA ns.example. hostmaster.example. 1 3600 600 86400 30"

// upstreamServer is a small DNS server over UDP and TCP on 127.0.0.1 that
// answers like a recursive resolver from a fixed set of records: it follows
// CNAMEs within its data (stopping at a loop or after 16), answers NXDOMAIN or NODATA with an
// SOA, and counts the questions it was asked.
type upstreamServer struct {
	addr string

	mu       sync.Mutex
	records  map[cacheKey][]dns.RR
	names    map[string]bool
	queries  map[cacheKey]int
	total    int
	rcode    int           // answer every question with this rcode when not 0
	gate     chan struct{} // when not nil, every answer waits for it to close
	wildcard string        // names under it have an A record 192.0.2.200
}

func newUpstreamServer(t testing.TB, zone ...string) *upstreamServer {
	t.Helper()
	s := &upstreamServer{records: map[cacheKey][]dns.RR{}, names: map[string]bool{}, queries: map[cacheKey]int{}}
	for _, line := range zone {
		s.add(t, line)
	}
	pc, ln, err := listenBoth("127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	s.addr = pc.LocalAddr().String()
	udp := &dns.Server{PacketConn: pc, Handler: dns.HandlerFunc(func(w dns.ResponseWriter, r *dns.Msg) { s.serve(w, r, true) })}
	tcp := &dns.Server{Listener: ln, Handler: dns.HandlerFunc(func(w dns.ResponseWriter, r *dns.Msg) { s.serve(w, r, false) })}
	var wg sync.WaitGroup
	for _, srv := range []*dns.Server{udp, tcp} {
		started := make(chan struct{})
		srv.NotifyStartedFunc = func() { close(started) }
		wg.Go(func() { _ = srv.ActivateAndServe() })
		<-started
	}
	t.Cleanup(func() {
		_ = udp.Shutdown()
		_ = tcp.Shutdown()
		wg.Wait()
	})
	return s
}

// configure changes the server's settings (rcode, gate, wildcard) in f.
func (s *upstreamServer) configure(f func()) {
	s.mu.Lock()
	defer s.mu.Unlock()
	f()
}

func (s *upstreamServer) add(t testing.TB, line string) {
	t.Helper()
	rr, err := dns.NewRR(line)
	if err != nil {
		t.Fatalf("record %q: %v", line, err)
	}
	h := rr.Header()
	name := strings.ToLower(h.Name)
	s.mu.Lock()
	defer s.mu.Unlock()
	k := cacheKey{name, h.Rrtype}
	s.records[k] = append(s.records[k], rr)
	s.names[name] = true
}

// asked returns how many times the server was asked about name and type.
func (s *upstreamServer) asked(name string, qtype uint16) int {
	s.mu.Lock()
	defer s.mu.Unlock()
	return s.queries[cacheKey{dns.Fqdn(name), qtype}]
}

func (s *upstreamServer) totalQueries() int {
	s.mu.Lock()
	defer s.mu.Unlock()
	return s.total
}

func (s *upstreamServer) serve(w dns.ResponseWriter, req *dns.Msg, udp bool) {
	q := req.Question[0]
	s.mu.Lock()
	s.queries[cacheKey{strings.ToLower(q.Name), q.Qtype}]++
	s.total++
	gate, rcode := s.gate, s.rcode
	s.mu.Unlock()
	if gate != nil {
		<-gate
	}
	m := new(dns.Msg)
	m.SetReply(req)
	m.RecursionAvailable = true
	if rcode != 0 {
		m.Rcode = rcode
		_ = w.WriteMsg(m)
		return
	}
	s.mu.Lock()
	cur := strings.ToLower(q.Name)
	seen := map[string]bool{cur: true}
	stoppedAtCNAME := false
	for q.Qtype != dns.TypeCNAME {
		c := s.records[cacheKey{cur, dns.TypeCNAME}]
		if len(c) == 0 {
			break
		}
		m.Answer = append(m.Answer, c[0])
		cur = strings.ToLower(c[0].(*dns.CNAME).Target)
		if seen[cur] || len(seen) > 16 {
			stoppedAtCNAME = true // a loop or a long chain: say no more
			break
		}
		seen[cur] = true
	}
	var recs []dns.RR
	if !stoppedAtCNAME {
		recs = s.records[cacheKey{cur, q.Qtype}]
		if s.wildcard != "" && dns.IsSubDomain(s.wildcard, cur) && q.Qtype == dns.TypeA {
			rr, _ := dns.NewRR(cur + " 300 IN A 192.0.2.200")
			recs = []dns.RR{rr}
		}
	}
	m.Answer = append(m.Answer, recs...)
	exists := s.names[cur] || len(recs) > 0
	s.mu.Unlock()
	if len(recs) == 0 && !stoppedAtCNAME {
		soa, _ := dns.NewRR(testSOA)
		m.Ns = append(m.Ns, soa)
		if !exists {
			m.Rcode = dns.RcodeNameError
		}
	}
	if udp {
		size := dns.MinMsgSize
		if opt := req.IsEdns0(); opt != nil {
			size = int(opt.UDPSize())
		}
		m.Truncate(size)
	}
	_ = w.WriteMsg(m)
}

// testClock is a clock that moves only when told.
type testClock struct {
	mu sync.Mutex
	t  time.Time
}

func newTestClock() *testClock { return &testClock{t: time.Date(2026, 1, 1, 0, 0, 0, 0, time.UTC)} }

func (c *testClock) Now() time.Time {
	c.mu.Lock()
	defer c.mu.Unlock()
	return c.t
}

func (c *testClock) Advance(d time.Duration) {
	c.mu.Lock()
	defer c.mu.Unlock()
	c.t = c.t.Add(d)
}

// testPolicy refuses loopback and RFC 1918 addresses, naming the rule: the
// shape of the egress package's policy, not its rules.
func testPolicy(a netip.Addr) error {
	a = a.Unmap()
	switch {
	case a.IsLoopback():
		return fmt.Errorf("%s is a loopback address (rule: loopback)", a)
	case a.IsPrivate() && a.Is4():
		return fmt.Errorf("%s is a private address (rule: RFC 1918)", a)
	}
	return nil
}

// fakeDirectory serves functions at fixed addresses.
type fakeDirectory map[string][]netip.AddrPort

func (d fakeDirectory) Serving(function string) []netip.AddrPort { return d[function] }

// testConfig is the default configuration asking only up, on clock.
func testConfig(up *upstreamServer, clock *testClock) Config {
	cfg := DefaultConfig()
	cfg.Upstreams = []string{up.addr}
	if clock != nil {
		cfg.Now = clock.Now
	}
	return cfg
}

func newTestResolver(t testing.TB, cfg Config, allow Allowlist, dir Directory) *Resolver {
	t.Helper()
	r, err := New(cfg, testPolicy, allow, dir)
	if err != nil {
		t.Fatal(err)
	}
	return r
}

func writeFile(t testing.TB, path, content string) {
	t.Helper()
	if err := os.WriteFile(path, []byte(content), 0o600); err != nil {
		t.Fatal(err)
	}
}
