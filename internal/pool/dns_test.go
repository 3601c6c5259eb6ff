package pool_test

import (
	"net"
	"net/netip"
	"slices"
	"testing"
	"time"

	"github.com/miekg/dns"
	"google.golang.org/grpc/codes"
	"google.golang.org/grpc/status"

	"github.com/hivemind/taskworker/internal/cluster"
	"github.com/hivemind/taskworker/internal/pool"
)

// upstreamDNS serves a small zone on 127.0.0.1 for the pool to resolve
// other names from: one public and one private answer.
func upstreamDNS(t *testing.T) string {
	t.Helper()
	records := map[string]string{
		"public.test.":  "public.test. 60 IN A 192.0.43.10",
		"private.test.": "private.test. 60 IN A 10.0.0.1",
	}
	mux := dns.NewServeMux()
	mux.HandleFunc("test.", func(w dns.ResponseWriter, req *dns.Msg) {
		m := new(dns.Msg)
		m.SetReply(req)
		q := req.Question[0]
		if rr, ok := records[q.Name]; ok && q.Qtype == dns.TypeA {
			a, _ := dns.NewRR(rr)
			m.Answer = append(m.Answer, a)
		} else if !ok {
			m.Rcode = dns.RcodeNameError
		}
		_ = w.WriteMsg(m)
	})
	pc, err := net.ListenPacket("udp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	srv := &dns.Server{PacketConn: pc, Handler: mux}
	go func() { _ = srv.ActivateAndServe() }()
	t.Cleanup(func() { _ = srv.Shutdown() })
	return pc.LocalAddr().String()
}

// The pool resolves for its users under the egress policy, and answers
// its own zone with the pools serving a function, over gRPC and standard
// DNS alike.
func TestResolveDomain(t *testing.T) {
	up := upstreamDNS(t)
	c := cluster.New(t, cluster.Options{Workers: 1, PoolConfig: func(_ int, cfg *pool.Config) {
		cfg.DNS.Upstreams = []string{up}
		cfg.DNSListen = "127.0.0.1:0"
	}})
	poolAddr := netip.MustParseAddrPort(c.Pools[0].Addr())
	ctx := ctxTimeout(t, 30*time.Second)
	cl := c.Client(0)
	tests := []struct {
		name, recordType string
		want             []string
		code             codes.Code
	}{
		{"add.fn.taskworker.internal", "", []string{poolAddr.Addr().String()}, codes.OK},
		{"ADD.fn.taskworker.internal.", "A", []string{poolAddr.Addr().String()}, codes.OK},
		{"nosuchfunction.fn.taskworker.internal", "", nil, codes.NotFound},
		{"public.test", "A", []string{"192.0.43.10"}, codes.OK},
		{"private.test", "A", nil, codes.PermissionDenied},
		{"missing.test", "A", nil, codes.NotFound},
		{"bad..name", "", nil, codes.InvalidArgument},
		{"public.test", "MX", nil, codes.InvalidArgument},
	}
	for _, tt := range tests {
		t.Run(tt.name+" "+tt.recordType, func(t *testing.T) {
			got, _, err := cl.Resolve(ctx, tt.name, tt.recordType)
			if status.Code(err) != tt.code {
				t.Fatalf("Resolve: %v, want code %v", err, tt.code)
			}
			if tt.code == codes.OK && !slices.Equal(got, tt.want) {
				t.Fatalf("Resolve = %v, want %v", got, tt.want)
			}
		})
	}
	srv, _, err := cl.Resolve(ctx, "_taskworker._tcp.add.fn.taskworker.internal", "SRV")
	if err != nil || len(srv) != 1 {
		t.Fatalf("SRV: %v, %v", srv, err)
	}

	// The standard listener answers the zone, and refuses to recurse.
	dnsAddr := c.Pools[0].DNSAddr()
	if !dnsAddr.IsValid() {
		t.Fatal("no DNS listener")
	}
	ask := func(name string, qtype uint16) *dns.Msg {
		m := new(dns.Msg)
		m.SetQuestion(name, qtype)
		in, _, err := (&dns.Client{Timeout: 5 * time.Second}).Exchange(m, dnsAddr.String())
		if err != nil {
			t.Fatalf("asking %s: %v", name, err)
		}
		return in
	}
	in := ask("add.fn.taskworker.internal.", dns.TypeA)
	if len(in.Answer) != 1 || in.Answer[0].(*dns.A).A.String() != poolAddr.Addr().String() {
		t.Fatalf("listener's answer for add: %v", in.Answer)
	}
	if in := ask("public.test.", dns.TypeA); in.Rcode != dns.RcodeRefused {
		t.Fatalf("listener recursed for an outside name: rcode %s", dns.RcodeToString[in.Rcode])
	}
}
