package egress

import (
	"context"
	"io"
	"net/http"
	"net/http/httptest"
	"net/netip"
	"net/url"
	"slices"
	"testing"
	"time"
)

// BenchmarkFetch compares a request through Client.Fetch (a Scope per
// request, allowlist, address checks, a secret injected and redacted) with
// the same request through a plain http.Client, to the same local server.
// Both reuse connections. Reported: ns/op and the p50 of single requests.
//
//	go test -run='^$' -bench=BenchmarkFetch -count=5 ./internal/egress
func BenchmarkFetch(b *testing.B) {
	srv := httptest.NewServer(http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		io.WriteString(w, `{"ok":true,"data":"0123456789abcdef0123456789abcdef"}`)
	}))
	defer srv.Close()
	u, _ := url.Parse(srv.URL)
	name := "http://api.bench.example:" + u.Port()

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

	b.Run("egress", func(b *testing.B) {
		c, err := New(Config{
			Resolver:  newResolver(map[string][]string{"api.bench.example": {"127.0.0.1"}}),
			AllowNets: []netip.Prefix{netip.MustParsePrefix("127.0.0.1/32")},
		})
		if err != nil {
			b.Fatal(err)
		}
		defer c.Close()
		allow := mustAllow(b, name)
		grants := Grants{"KEY": allow}
		secrets := SecretsFunc(func(context.Context, string) ([]byte, error) { return []byte("sk-bench-0123456789"), nil })
		p50(b, func() error {
			s := c.NewScope(ScopeConfig{Allow: allow, Grants: grants, Secrets: secrets})
			_, err := c.Fetch(context.Background(), s, Request{URL: name + "/v1/items?q=1",
				Header: http.Header{"Authorization": {"Bearer {{secret:KEY}}"}}})
			return err
		})
	})
}

// p50 runs op b.N times and reports the median duration of one op.
func p50(b *testing.B, op func() error) {
	if err := op(); err != nil { // warm the connection
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
