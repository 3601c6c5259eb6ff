package dnsproxy

import (
	"context"
	"fmt"
	"net/netip"
	"os/exec"
	"runtime"
	"slices"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/miekg/dns"
)

// serveTest starts a listener on 127.0.0.1:0, closed when the test ends.
func serveTest(t *testing.T, r *Resolver) *Listener {
	t.Helper()
	l, err := r.Serve(t.Context(), "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() {
		if err := l.Close(); err != nil {
			t.Errorf("close: %v", err)
		}
	})
	return l
}

// ask sends one question to the listener over network ("udp" or "tcp").
func ask(t *testing.T, l *Listener, network, name string, qtype uint16, edns uint16) *dns.Msg {
	t.Helper()
	m := new(dns.Msg)
	m.SetQuestion(dns.Fqdn(name), qtype)
	if edns > 0 {
		m.SetEdns0(edns, false)
	}
	c := &dns.Client{Net: network, Timeout: 30 * time.Second, UDPSize: 65535}
	resp, _, err := c.Exchange(m, l.Addr().String())
	if err != nil {
		t.Fatalf("%s %s %s: %v", network, name, dns.TypeToString[qtype], err)
	}
	return resp
}

// wireSize is m's size as it was sent: compressed.
func wireSize(m *dns.Msg) int {
	m.Compress = true
	return m.Len()
}

func answerValues(m *dns.Msg) []string {
	var out []string
	for _, rr := range m.Answer {
		out = append(out, strings.TrimPrefix(rr.String(), rr.Header().String()))
	}
	slices.Sort(out)
	return out
}

func TestListenerAnswersTheZone(t *testing.T) {
	up := newUpstreamServer(t, testZone...)
	l := serveTest(t, newTestResolver(t, testConfig(up, nil), nil, testDirectory))
	for _, network := range []string{"udp", "tcp"} {
		t.Run(network, func(t *testing.T) {
			resp := ask(t, l, network, "add.fn.taskworker.internal", dns.TypeA, 0)
			if resp.Rcode != dns.RcodeSuccess || !resp.Authoritative || resp.RecursionAvailable {
				t.Fatalf("rcode %s AA %v RA %v, want NOERROR, authoritative, no recursion", dns.RcodeToString[resp.Rcode], resp.Authoritative, resp.RecursionAvailable)
			}
			if got := answerValues(resp); !slices.Equal(got, []string{"10.1.0.5", "127.0.0.1"}) {
				t.Errorf("answers %q", got)
			}
			if ttl := resp.Answer[0].Header().Ttl; ttl != 5 {
				t.Errorf("TTL %d, want the zone's 5", ttl)
			}

			resp = ask(t, l, network, "_taskworker._tcp.add.fn.taskworker.internal", dns.TypeSRV, 1232)
			if len(resp.Answer) != 4 {
				t.Fatalf("%d SRV records, want 4: %v", len(resp.Answer), resp)
			}
			var extra []string
			for _, rr := range resp.Extra {
				if rr.Header().Rrtype != dns.TypeOPT {
					extra = append(extra, rr.Header().Name+" "+strings.TrimPrefix(rr.String(), rr.Header().String()))
				}
			}
			slices.Sort(extra)
			extra = slices.Compact(extra)
			want := []string{
				"0xfd000000000000000000000000000005.add.fn.taskworker.internal. fd00::5",
				"10-1-0-5.add.fn.taskworker.internal. 10.1.0.5",
				"127-0-0-1.add.fn.taskworker.internal. 127.0.0.1",
			}
			if !slices.Equal(extra, want) {
				t.Errorf("additional records %q, want the targets' addresses %q", extra, want)
			}

			resp = ask(t, l, network, "nosuch.fn.taskworker.internal", dns.TypeA, 0)
			if resp.Rcode != dns.RcodeNameError || len(resp.Ns) != 1 || resp.Ns[0].Header().Rrtype != dns.TypeSOA {
				t.Errorf("unknown function: rcode %s, authority %v; want NXDOMAIN with the zone's SOA", dns.RcodeToString[resp.Rcode], resp.Ns)
			}
			resp = ask(t, l, network, "add.fn.taskworker.internal", dns.TypeMX, 0)
			if resp.Rcode != dns.RcodeSuccess || len(resp.Answer) != 0 || len(resp.Ns) != 1 {
				t.Errorf("MX in the zone: rcode %s, %d answers; want NODATA", dns.RcodeToString[resp.Rcode], len(resp.Answer))
			}
			resp = ask(t, l, network, "fn.taskworker.internal", dns.TypeSOA, 0)
			if len(resp.Answer) != 1 || resp.Answer[0].Header().Rrtype != dns.TypeSOA {
				t.Errorf("the zone's SOA: %v", resp.Answer)
			}
		})
	}
}

func TestListenerIsNotAnOpenResolver(t *testing.T) {
	up := newUpstreamServer(t, testZone...)
	cfg := testConfig(up, nil)
	// Recursion for another network than the asker's is none for the asker.
	cfg.Recursive = []netip.Prefix{netip.MustParsePrefix("10.0.0.0/8"), netip.MustParsePrefix("::1/128")}
	l := serveTest(t, newTestResolver(t, cfg, nil, testDirectory))
	for _, network := range []string{"udp", "tcp"} {
		for _, q := range []struct {
			name  string
			qtype uint16
		}{
			{"www.example", dns.TypeA},
			{"www.example", dns.TypeANY},
			{"taskworker.internal", dns.TypeA},
			{"example", dns.TypeNS},
		} {
			resp := ask(t, l, network, q.name, q.qtype, 0)
			if resp.Rcode != dns.RcodeRefused || len(resp.Answer) != 0 {
				t.Errorf("%s %s %s: rcode %s with %d answers, want REFUSED", network, q.name, dns.TypeToString[q.qtype], dns.RcodeToString[resp.Rcode], len(resp.Answer))
			}
		}
	}
	if n := up.totalQueries(); n != 0 {
		t.Errorf("refused questions reached the upstream %d times", n)
	}
}

func TestListenerRecursionForConfiguredSources(t *testing.T) {
	up := newUpstreamServer(t, testZone...)
	cfg := testConfig(up, nil)
	cfg.Recursive = []netip.Prefix{netip.MustParsePrefix("127.0.0.0/8")}
	var users []string
	var mu sync.Mutex
	allow := func(user, name string) error {
		mu.Lock()
		defer mu.Unlock()
		users = append(users, user)
		if name == "www.example." {
			return fmt.Errorf("%s is not for the listener (rule: allowlist)", name)
		}
		return nil
	}
	l := serveTest(t, newTestResolver(t, cfg, allow, testDirectory))
	for _, network := range []string{"udp", "tcp"} {
		resp := ask(t, l, network, "alias2.example", dns.TypeA, 0)
		if resp.Rcode != dns.RcodeSuccess || !resp.RecursionAvailable || resp.Authoritative {
			t.Fatalf("%s: rcode %s RA %v AA %v", network, dns.RcodeToString[resp.Rcode], resp.RecursionAvailable, resp.Authoritative)
		}
		want := []string{"192.0.2.10", "alias.example.", "www.example."}
		if got := answerValues(resp); !slices.Equal(got, want) {
			t.Errorf("%s: answers %q, want the CNAME chain and the address %q", network, got, want)
		}
		for _, c := range []struct {
			name  string
			qtype uint16
			rcode int
		}{
			{"private.example", dns.TypeA, dns.RcodeRefused}, // the same policy as ResolveDomain
			{"www.example", dns.TypeA, dns.RcodeRefused},     // and the same allowlist
			{"nosuch.example", dns.TypeA, dns.RcodeNameError},
			{"v4only.example", dns.TypeAAAA, dns.RcodeSuccess},
			{"www.example", dns.TypeMX, dns.RcodeNotImplemented},
		} {
			if resp := ask(t, l, network, c.name, c.qtype, 0); resp.Rcode != c.rcode || len(resp.Answer) != 0 {
				t.Errorf("%s %s %s: rcode %s, %d answers; want %s and none", network, c.name, dns.TypeToString[c.qtype], dns.RcodeToString[resp.Rcode], len(resp.Answer), dns.RcodeToString[c.rcode])
			}
		}
	}
	mu.Lock()
	defer mu.Unlock()
	for _, u := range users {
		if u != "" {
			t.Errorf("the listener asked the allowlist for user %q, want \"\"", u)
		}
	}
}

func TestListenerTruncatesLargeUDPAnswers(t *testing.T) {
	dir := fakeDirectory{}
	for i := range 60 {
		dir["big"] = append(dir["big"], netip.AddrPortFrom(netip.AddrFrom4([4]byte{10, 2, byte(i / 250), byte(1 + i%250)}), 50052))
	}
	up := newUpstreamServer(t)
	l := serveTest(t, newTestResolver(t, testConfig(up, nil), nil, dir))
	// 60 A records: 60 x 16 bytes and more with the header and question.
	for _, tc := range []struct {
		network   string
		edns      uint16
		truncated bool
		maxSize   int
	}{
		{"udp", 0, true, 512},       // no EDNS0: 512 bytes
		{"udp", 700, true, 700},     // what the client advertises
		{"udp", 65000, false, 1232}, // never more than Config.UDPSize (all 60 fit in 1232)
		{"tcp", 0, false, 65535},
	} {
		t.Run(fmt.Sprintf("%s/edns %d", tc.network, tc.edns), func(t *testing.T) {
			resp := ask(t, l, tc.network, "big.fn.taskworker.internal", dns.TypeA, tc.edns)
			size := wireSize(resp)
			if resp.Truncated != tc.truncated || size > tc.maxSize {
				t.Errorf("TC %v with %d records in %d bytes; want TC %v within %d bytes", resp.Truncated, len(resp.Answer), size, tc.truncated, tc.maxSize)
			}
			if !tc.truncated && len(resp.Answer) != 60 {
				t.Errorf("%d records, want all 60", len(resp.Answer))
			}
		})
	}

	// An SRV answer for 60 addresses does not fit even in 1232 bytes.
	resp := ask(t, l, "udp", "_taskworker._tcp.big.fn.taskworker.internal", dns.TypeSRV, 4096)
	if !resp.Truncated || wireSize(resp) > 1232 {
		t.Errorf("SRV over UDP: TC %v in %d bytes; want truncated within 1232", resp.Truncated, wireSize(resp))
	}
	resp = ask(t, l, "tcp", "_taskworker._tcp.big.fn.taskworker.internal", dns.TypeSRV, 4096)
	if resp.Truncated || len(resp.Answer) != 60 {
		t.Errorf("SRV over TCP: TC %v, %d records; want all 60", resp.Truncated, len(resp.Answer))
	}
}

func TestListenerRateLimitsEachSource(t *testing.T) {
	up := newUpstreamServer(t)
	clock := newTestClock()
	cfg := testConfig(up, clock)
	cfg.RateBurst, cfg.RatePerSource = 3, 1
	l := serveTest(t, newTestResolver(t, cfg, nil, testDirectory))
	for i := range 3 {
		if resp := ask(t, l, "tcp", "add.fn.taskworker.internal", dns.TypeA, 0); resp.Rcode != dns.RcodeSuccess {
			t.Fatalf("query %d within the burst: %s", i, dns.RcodeToString[resp.Rcode])
		}
	}
	if resp := ask(t, l, "tcp", "add.fn.taskworker.internal", dns.TypeA, 0); resp.Rcode != dns.RcodeRefused {
		t.Errorf("over the rate over TCP: %s, want REFUSED", dns.RcodeToString[resp.Rcode])
	}
	// Over UDP a source over its rate gets no answer at all.
	m := new(dns.Msg)
	m.SetQuestion("add.fn.taskworker.internal.", dns.TypeA)
	c := &dns.Client{Net: "udp", Timeout: 300 * time.Millisecond}
	if resp, _, err := c.Exchange(m, l.Addr().String()); err == nil {
		t.Errorf("over the rate over UDP: answered %s, want silence", dns.RcodeToString[resp.Rcode])
	}
	clock.Advance(time.Second)
	if resp := ask(t, l, "udp", "add.fn.taskworker.internal", dns.TypeA, 0); resp.Rcode != dns.RcodeSuccess {
		t.Errorf("after a token came back: %s", dns.RcodeToString[resp.Rcode])
	}
}

func TestListenerMalformedQueries(t *testing.T) {
	up := newUpstreamServer(t)
	l := serveTest(t, newTestResolver(t, testConfig(up, nil), nil, testDirectory))
	c := &dns.Client{Net: "tcp", Timeout: 30 * time.Second}
	for _, tc := range []struct {
		name  string
		build func(m *dns.Msg)
		rcode int
	}{
		{"two questions", func(m *dns.Msg) {
			m.Question = append(m.Question, dns.Question{Name: "x.fn.taskworker.internal.", Qtype: dns.TypeA, Qclass: dns.ClassINET})
		}, dns.RcodeFormatError},
		{"notify", func(m *dns.Msg) { m.Opcode = dns.OpcodeNotify }, dns.RcodeNotImplemented},
		{"chaos class", func(m *dns.Msg) { m.Question[0].Qclass = dns.ClassCHAOS }, dns.RcodeRefused},
		{"EDNS version 1", func(m *dns.Msg) { m.SetEdns0(1232, false); m.IsEdns0().SetVersion(1) }, dns.RcodeBadVers},
		{"escaped name", func(m *dns.Msg) { m.Question[0].Name = `a\.b.fn.taskworker.internal.` }, dns.RcodeRefused},
	} {
		t.Run(tc.name, func(t *testing.T) {
			m := new(dns.Msg)
			m.SetQuestion("add.fn.taskworker.internal.", dns.TypeA)
			tc.build(m)
			resp, _, err := c.Exchange(m, l.Addr().String())
			if err != nil {
				t.Fatal(err)
			}
			if resp.Rcode != tc.rcode || len(resp.Answer) != 0 {
				t.Errorf("rcode %s with %d answers, want %s", dns.RcodeToString[resp.Rcode], len(resp.Answer), dns.RcodeToString[tc.rcode])
			}
		})
	}
}

func TestListenerStopsWithItsContext(t *testing.T) {
	up := newUpstreamServer(t)
	r := newTestResolver(t, testConfig(up, nil), nil, testDirectory)
	before := runtime.NumGoroutine()
	ctx, cancel := context.WithCancel(t.Context())
	l, err := r.Serve(ctx, "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	ask(t, l, "tcp", "add.fn.taskworker.internal", dns.TypeA, 0)
	cancel()
	deadline := time.Now().Add(30 * time.Second)
	for {
		c := &dns.Client{Net: "tcp", Timeout: time.Second}
		m := new(dns.Msg)
		m.SetQuestion("add.fn.taskworker.internal.", dns.TypeA)
		if _, _, err := c.Exchange(m, l.Addr().String()); err != nil {
			break
		}
		if time.Now().After(deadline) {
			t.Fatal("the listener still answers after its context ended")
		}
		time.Sleep(10 * time.Millisecond)
	}
	if err := l.Close(); err != nil {
		t.Errorf("Close after the context ended: %v", err)
	}
	// Every goroutine the listener started has ended.
	for runtime.NumGoroutine() > before {
		if time.Now().After(deadline) {
			t.Fatalf("%d goroutines before the listener, %d after it stopped", before, runtime.NumGoroutine())
		}
		time.Sleep(10 * time.Millisecond)
	}
}

func TestDig(t *testing.T) {
	dig, err := exec.LookPath("dig")
	if err != nil {
		t.Skip("dig is not installed (Debian: bind9-dnsutils); the miekg client tests cover the listener")
	}
	up := newUpstreamServer(t)
	l := serveTest(t, newTestResolver(t, testConfig(up, nil), nil, testDirectory))
	port := fmt.Sprint(l.Addr().Port())
	for _, tc := range []struct {
		args []string
		want []string
	}{
		{[]string{"add.fn.taskworker.internal"}, []string{"10.1.0.5", "127.0.0.1"}},
		{[]string{"+tcp", "add.fn.taskworker.internal", "AAAA"}, []string{"fd00::5"}},
		{[]string{"_taskworker._tcp.add.fn.taskworker.internal", "SRV"}, []string{
			"0 1 50052 10-1-0-5.add.fn.taskworker.internal.",
			"0 1 50053 10-1-0-5.add.fn.taskworker.internal.",
			"0 1 50054 127-0-0-1.add.fn.taskworker.internal.",
			"0 1 50055 0xfd000000000000000000000000000005.add.fn.taskworker.internal.",
		}},
	} {
		args := append([]string{"@127.0.0.1", "-p", port, "+short", "+tries=1", "+time=30"}, tc.args...)
		out, err := exec.Command(dig, args...).CombinedOutput()
		if err != nil {
			t.Fatalf("dig %s: %v\n%s", strings.Join(args, " "), err, out)
		}
		var lines []string
		for _, line := range strings.Split(string(out), "\n") {
			if line = strings.TrimSpace(line); line != "" {
				lines = append(lines, line)
			}
		}
		slices.Sort(lines)
		if !slices.Equal(lines, tc.want) {
			t.Errorf("dig %s:\n%s\nwant %q", strings.Join(args, " "), out, tc.want)
		}
	}
	out, _ := exec.Command(dig, "@127.0.0.1", "-p", port, "+tries=1", "+time=30", "www.example.com").CombinedOutput()
	if !strings.Contains(string(out), "status: REFUSED") {
		t.Errorf("dig of a name outside the zone:\n%s\nwant status: REFUSED", out)
	}
}
