package dashboard

import (
	"math"
	"net/http"
	"net/http/httptest"
	"strings"
	"testing"
	"time"

	"github.com/prometheus/client_golang/prometheus"
)

func TestQuantile(t *testing.T) {
	// 100 observations: 50 up to 1 ms, 40 more up to 10 ms, 10 more up to 100 ms.
	buckets := []bucket{{0.001, 50}, {0.010, 90}, {0.100, 100}}
	for _, tc := range []struct {
		q, want float64
	}{
		{0.25, 0.0005},
		{0.50, 0.001},
		{0.70, 0.0055},
		{0.99, 0.091},
		{1.00, 0.100},
	} {
		if got := quantile(buckets, tc.q); math.Abs(got-tc.want) > 1e-9 {
			t.Errorf("quantile(%v) = %v, want %v", tc.q, got, tc.want)
		}
	}
	if got := quantile([]bucket{{0.001, 0}}, 0.5); got != 0 {
		t.Errorf("quantile of no observations = %v, want 0", got)
	}
}

func TestSamplerFollowsTheCallMetrics(t *testing.T) {
	reg := prometheus.NewRegistry()
	calls := prometheus.NewCounterVec(prometheus.CounterOpts{Name: callsMetric}, []string{"function", "code"})
	seconds := prometheus.NewHistogramVec(prometheus.HistogramOpts{Name: latencyMetric, Buckets: []float64{.001, .01, .1}}, []string{"function"})
	reg.MustRegister(calls, seconds)
	s := newSampler(reg, 2)
	start := time.Unix(1000, 0)
	s.sample(start)
	for range 90 {
		calls.WithLabelValues("add", "OK").Inc()
		seconds.WithLabelValues("add").Observe(0.0005)
	}
	for range 10 {
		calls.WithLabelValues("add", "Unavailable").Inc()
		seconds.WithLabelValues("add").Observe(0.05)
	}
	s.sample(start.Add(2 * time.Second))
	h := s.history()
	if len(h) != 1 {
		t.Fatalf("%d samples, want 1", len(h))
	}
	if h[0].PerSec != 50 || h[0].Errors != 5 {
		t.Errorf("sample %+v: want 50 calls/s, 5 errors/s", h[0])
	}
	if h[0].P50Ms <= 0 || h[0].P50Ms > 1 || h[0].P99Ms < 10 || h[0].P99Ms > 100 {
		t.Errorf("sample %+v: want p50 within the first bucket and p99 within the third", h[0])
	}
	for i := range 3 {
		s.sample(start.Add(time.Duration(4+2*i) * time.Second))
	}
	if n := len(s.history()); n != 2 {
		t.Errorf("history keeps %d samples, want 2", n)
	}
}

func TestSnapshotNeedsABearerToken(t *testing.T) {
	d := New(Config{})
	for _, tc := range []struct{ name, header string }{
		{"none", ""},
		{"not bearer", "Basic YWRtaW46eA=="},
		{"empty", "Bearer "},
	} {
		t.Run(tc.name, func(t *testing.T) {
			req := httptest.NewRequest("GET", "/api/snapshot?token=tw_x", nil)
			if tc.header != "" {
				req.Header.Set("Authorization", tc.header)
			}
			rec := httptest.NewRecorder()
			d.ServeHTTP(rec, req)
			if rec.Code != http.StatusUnauthorized || !strings.Contains(rec.Body.String(), "sign in with a token") {
				t.Fatalf("HTTP %d %s", rec.Code, rec.Body)
			}
		})
	}
}

func TestPageAndHeaders(t *testing.T) {
	d := New(Config{})
	for _, path := range []string{"/", "/app.js", "/style.css"} {
		rec := httptest.NewRecorder()
		d.ServeHTTP(rec, httptest.NewRequest("GET", path, nil))
		if rec.Code != http.StatusOK {
			t.Fatalf("GET %s: HTTP %d", path, rec.Code)
		}
		if csp := rec.Header().Get("Content-Security-Policy"); !strings.Contains(csp, "default-src 'self'") {
			t.Errorf("GET %s: Content-Security-Policy %q", path, csp)
		}
	}
	rec := httptest.NewRecorder()
	d.ServeHTTP(rec, httptest.NewRequest("GET", "/web/index.html", nil))
	if rec.Code != http.StatusNotFound {
		t.Errorf("GET /web/index.html: HTTP %d, want 404", rec.Code)
	}
}
