package worker

import (
	"context"
	"errors"
	"testing"

	"github.com/prometheus/client_golang/prometheus/testutil"
	"google.golang.org/grpc/codes"
	"google.golang.org/grpc/status"

	v1 "github.com/hivemind/taskworker/api/taskworker/v1"
	"github.com/hivemind/taskworker/internal/metrics"
)

func newMeasuredWorker(t testing.TB, m *metrics.Metrics) *Server {
	t.Helper()
	s, err := New(Config{ID: "worker_001", Metrics: m})
	if err != nil {
		t.Fatal(err)
	}
	if err := s.Register("add", func(a, b int) int { return a + b }, true); err != nil {
		t.Fatal(err)
	}
	if err := s.Register("fail", func() error { return errors.New("no") }, true); err != nil {
		t.Fatal(err)
	}
	return s
}

// The calls a worker runs are counted by function and code, and timed;
// a function nobody registered is counted under "-".
func TestCallsAreCounted(t *testing.T) {
	m := metrics.NewWorker()
	s := newMeasuredWorker(t, m)
	ctx := context.Background()
	for range 3 {
		if _, err := s.call(ctx, &v1.FunctionCallRequest{FunctionName: "add", Args: []byte("[1, 2]")}); err != nil {
			t.Fatal(err)
		}
	}
	if _, err := s.call(ctx, &v1.FunctionCallRequest{FunctionName: "fail"}); status.Code(err) != codes.Unknown {
		t.Fatalf("fail: %v", err)
	}
	if _, err := s.call(ctx, &v1.FunctionCallRequest{FunctionName: "typed_by_anyone"}); status.Code(err) != codes.NotFound {
		t.Fatalf("an unknown function: %v", err)
	}
	for _, tc := range []struct {
		function, code string
		want           float64
	}{{"add", "OK", 3}, {"fail", "Unknown", 1}, {"-", "NotFound", 1}, {"typed_by_anyone", "NotFound", 0}} {
		if got := testutil.ToFloat64(m.Calls.WithLabelValues(tc.function, tc.code)); got != tc.want {
			t.Errorf("calls of %s with %s: %v, want %v", tc.function, tc.code, got, tc.want)
		}
	}
	if n := testutil.CollectAndCount(m.CallSeconds); n != 3 {
		t.Errorf("latency series: %d, want 3 (add, fail, -)", n)
	}
}

// What metrics add to a call of a native function: with them on, a
// successful call costs two atomic adds on series resolved once (no
// allocation); off, nothing.
func BenchmarkCall(b *testing.B) {
	for _, on := range []bool{false, true} {
		name := "metrics-off"
		var m *metrics.Metrics
		if on {
			name, m = "metrics-on", metrics.NewWorker()
		}
		b.Run(name, func(b *testing.B) {
			s := newMeasuredWorker(b, m)
			req := &v1.FunctionCallRequest{FunctionName: "add", Args: []byte("[1, 2]")}
			ctx := context.Background()
			b.ReportAllocs()
			for b.Loop() {
				if _, err := s.call(ctx, req); err != nil {
					b.Fatal(err)
				}
			}
		})
	}
}
