package dnsproxy

import (
	"context"
	"fmt"
	"testing"

	"github.com/miekg/dns"

	v1 "github.com/hivemind/taskworker/api/taskworker/v1"
)

// BenchmarkResolve compares an answer from the cache with one that asks the
// upstream (a local DNS server over UDP on loopback, so the figure is the
// resolver's own cost plus one loopback exchange, not a real network's).
func BenchmarkResolve(b *testing.B) {
	up := newUpstreamServer(b, testZone...)
	up.configure(func() { up.wildcard = "bench.example." })
	ctx := context.Background()

	b.Run("cached", func(b *testing.B) {
		r := newTestResolver(b, testConfig(up, nil), nil, testDirectory)
		if _, err := r.Resolve(ctx, "alice", "www.example", dns.TypeA); err != nil {
			b.Fatal(err)
		}
		b.ReportAllocs()
		for b.Loop() {
			if _, err := r.Resolve(ctx, "alice", "www.example", dns.TypeA); err != nil {
				b.Fatal(err)
			}
		}
	})
	b.Run("cached-parallel", func(b *testing.B) {
		r := newTestResolver(b, testConfig(up, nil), nil, testDirectory)
		if _, err := r.Resolve(ctx, "alice", "www.example", dns.TypeA); err != nil {
			b.Fatal(err)
		}
		b.ReportAllocs()
		b.RunParallel(func(pb *testing.PB) {
			for pb.Next() {
				if _, err := r.Resolve(ctx, "alice", "www.example", dns.TypeA); err != nil {
					b.Error(err)
					return
				}
			}
		})
	})
	b.Run("miss", func(b *testing.B) {
		r := newTestResolver(b, testConfig(up, nil), nil, testDirectory)
		b.ReportAllocs()
		i := 0
		for b.Loop() {
			i++
			if _, err := r.Resolve(ctx, "alice", fmt.Sprintf("n%d.bench.example", i), dns.TypeA); err != nil {
				b.Fatal(err)
			}
		}
	})
	b.Run("zone", func(b *testing.B) {
		r := newTestResolver(b, testConfig(up, nil), nil, testDirectory)
		b.ReportAllocs()
		for b.Loop() {
			if _, err := r.Resolve(ctx, "alice", "add.fn.taskworker.internal", TypeAddresses); err != nil {
				b.Fatal(err)
			}
		}
	})
	b.Run("handle-cached", func(b *testing.B) {
		r := newTestResolver(b, testConfig(up, nil), nil, testDirectory)
		req := &v1.DNSRequest{Domain: "www.example", RecordType: "A"}
		if _, err := r.Handle(ctx, "alice", req); err != nil {
			b.Fatal(err)
		}
		b.ReportAllocs()
		for b.Loop() {
			if _, err := r.Handle(ctx, "alice", req); err != nil {
				b.Fatal(err)
			}
		}
	})
}

// BenchmarkListener is one question to the listener and its answer over
// loopback UDP, by the DNS client.
func BenchmarkListener(b *testing.B) {
	up := newUpstreamServer(b)
	cfg := testConfig(up, nil)
	cfg.RatePerSource, cfg.RateBurst = 1e9, 1e9
	r := newTestResolver(b, cfg, nil, testDirectory)
	l, err := r.Serve(context.Background(), "127.0.0.1:0")
	if err != nil {
		b.Fatal(err)
	}
	defer l.Close()
	c := &dns.Client{Net: "udp"}
	m := new(dns.Msg)
	m.SetQuestion("add.fn.taskworker.internal.", dns.TypeA)
	for b.Loop() {
		if _, _, err := c.Exchange(m, l.Addr().String()); err != nil {
			b.Fatal(err)
		}
	}
}
