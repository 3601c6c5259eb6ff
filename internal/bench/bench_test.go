package bench_test

import (
	"context"
	"errors"
	"testing"
	"time"

	"github.com/hivemind/taskworker/internal/bench"
)

func TestRunCountsCallsAndErrors(t *testing.T) {
	n := 0
	boom := errors.New("boom")
	r := bench.Run(context.Background(), "x", 1, 0, 50*time.Millisecond, func(context.Context) error {
		n++
		if n%2 == 0 {
			return boom
		}
		time.Sleep(time.Millisecond)
		return nil
	})
	if r.Calls == 0 || r.Errors == 0 || r.Calls+r.Errors != n || !errors.Is(r.FirstError, boom) {
		t.Fatalf("calls %d errors %d first %v; %d made", r.Calls, r.Errors, r.FirstError, n)
	}
	if r.P50 < time.Millisecond || r.P50 > r.P99 || r.P99 > r.P999 {
		t.Fatalf("percentiles out of order or below the 1ms sleep: %v %v %v", r.P50, r.P99, r.P999)
	}
}
