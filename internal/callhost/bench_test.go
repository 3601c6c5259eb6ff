package callhost_test

import (
	"context"
	"io"
	"net/http"
	"net/http/httptest"
	"slices"
	"testing"
	"time"

	"github.com/hivemind/taskworker/internal/callhost"
	"github.com/hivemind/taskworker/internal/callhost/callhosttest"
	"github.com/hivemind/taskworker/internal/egress"
)

// BenchmarkFetchForCall is what a function's outbound request costs over a
// direct one to the same local server: "direct" is a plain http.Client;
// "pool" is a call's Host as the worker has it, over gRPC on loopback to
// the EgressService (the call's token resolved, the call's scope kept,
// allowlist, address checks, a secret injected and redacted) and on to the
// server. Both reuse connections. Reported: ns/op and the p50 of single
// requests.
//
//	go test -run='^$' -bench=BenchmarkFetchForCall -count=5 ./internal/callhost
func BenchmarkFetchForCall(b *testing.B) {
	srv := httptest.NewServer(http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		io.WriteString(w, `{"ok":true,"data":"0123456789abcdef0123456789abcdef"}`)
	}))
	defer srv.Close()

	b.Run("direct", func(b *testing.B) {
		hc := &http.Client{Transport: &http.Transport{}}
		defer hc.CloseIdleConnections()
		p50(b, func() error {
			req, _ := http.NewRequest("GET", srv.URL+"/v1/items?q=1", nil)
			req.Header.Set("Authorization", "Bearer sk-bench-0123456789")
			resp, err := hc.Do(req)
			if err != nil {
				return err
			}
			_, err = io.ReadAll(resp.Body)
			resp.Body.Close()
			return err
		})
	})

	b.Run("pool", func(b *testing.B) {
		pool := callhosttest.StartConfig(b, egress.Config{MaxRequestsPerCall: 1 << 30})
		ctx := context.Background()
		if _, err := pool.Store.Put(ctx, "alice", "KEY", []byte("sk-bench-0123456789")); err != nil {
			b.Fatal(err)
		}
		if _, err := pool.Store.Grant(ctx, "alice", "KEY", "bench", []string{srv.URL}); err != nil {
			b.Fatal(err)
		}
		// One call per request, as a function that makes one request per
		// call: each resolves its token, makes its scope (the grants, from
		// etcd) and reads its secret (an audit event, written to etcd)
		// once.
		b.Run("call-per-request", func(b *testing.B) {
			p50(b, func() error {
				c, end := pool.Begin(ctx, egress.Call{Owner: "alice", Function: "bench", Caller: "alice", AllowHosts: []string{srv.URL}})
				defer end()
				_, err := callhost.From(c).Fetch(c, &callhost.Request{URL: srv.URL + "/v1/items?q=1",
					Header: http.Header{"Authorization": {"Bearer {{secret:KEY}}"}}})
				return err
			})
		})
		// Many requests in one call: each after the first pays only the
		// proxy's own work and the hops.
		b.Run("same-call", func(b *testing.B) {
			c, end := pool.Begin(ctx, egress.Call{Owner: "alice", Function: "bench", Caller: "alice", AllowHosts: []string{srv.URL}})
			defer end()
			p50(b, func() error {
				_, err := callhost.From(c).Fetch(c, &callhost.Request{URL: srv.URL + "/v1/items?q=1",
					Header: http.Header{"Authorization": {"Bearer {{secret:KEY}}"}}})
				return err
			})
		})
	})
}

// p50 runs op b.N times and reports the median duration of one op.
func p50(b *testing.B, op func() error) {
	if err := op(); err != nil { // warm the connections
		b.Fatal(err)
	}
	ds := make([]time.Duration, 0, b.N)
	b.ResetTimer()
	for i := 0; i < b.N; i++ {
		start := time.Now()
		if err := op(); err != nil {
			b.Fatal(err)
		}
		ds = append(ds, time.Since(start))
	}
	b.StopTimer()
	slices.Sort(ds)
	b.ReportMetric(float64(ds[len(ds)/2].Nanoseconds())/1e3, "p50-µs")
}
