package bench_test

import (
	"context"
	"errors"
	"strings"
	"sync"
	"sync/atomic"
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

// A call in flight when the window closes runs to its end: the window is not
// a deadline on the calls, so a benchmark never counts its own cut-off as a
// failure.
func TestRunLetsCallsInFlightFinish(t *testing.T) {
	// The window is long enough for each of the four callers to start a
	// call on a loaded machine, and shorter than a call: every call is
	// still in flight when it ends.
	r := bench.Run(context.Background(), "x", 4, 0, 100*time.Millisecond, func(ctx context.Context) error {
		if _, ok := ctx.Deadline(); ok {
			return errors.New("the call got the window as its deadline")
		}
		select {
		case <-ctx.Done():
			return ctx.Err()
		case <-time.After(300 * time.Millisecond):
			return nil
		}
	})
	if r.Errors != 0 || r.Calls < 4 {
		t.Fatalf("%d calls, %d errors (first: %v); want every call in flight finished", r.Calls, r.Errors, r.FirstError)
	}
}

// TestFairRunsTheFloodOnlyForTheSecondRun checks the harness, with
// fakes: the measured calls see no flood in the first run and a steady one
// in the second.
func TestFairRunsTheFloodOnlyForTheSecondRun(t *testing.T) {
	var flooding atomic.Int64
	var alone, flooded atomic.Int64
	r := bench.Fair(context.Background(), 10*time.Millisecond, 50*time.Millisecond, func(context.Context) error {
		if flooding.Load() == 0 {
			alone.Add(1)
		} else {
			flooded.Add(1)
		}
		time.Sleep(time.Millisecond)
		return nil
	}, 3, func(ctx context.Context) error {
		flooding.Add(1)
		defer flooding.Add(-1)
		<-ctx.Done()
		return ctx.Err()
	})
	if r.Alone.Calls == 0 || r.Flooded.Calls == 0 || r.Alone.Errors+r.Flooded.Errors != 0 {
		t.Fatalf("%+v", r)
	}
	if flooded.Load() < int64(r.Flooded.Calls) || alone.Load() < int64(r.Alone.Calls) {
		t.Fatalf("%d calls alone, %d flooded; the runs counted %d and %d", alone.Load(), flooded.Load(), r.Alone.Calls, r.Flooded.Calls)
	}
	if flooding.Load() != 0 {
		t.Fatal("the flood outlived Fair")
	}
}

// Compare runs its two targets in turns, a b b a a b b a, and adds up each
// one's turns: its calls, and its meters read around its own turns only.
func TestCompareTakesTurns(t *testing.T) {
	var mu sync.Mutex
	var order []string
	var counted [2]atomic.Int64 // a meter each: a microsecond of "CPU" per call
	target := func(name string, k int) bench.Target {
		return bench.Target{
			Name: name,
			Call: func(context.Context) error {
				mu.Lock()
				if len(order) == 0 || order[len(order)-1] != name {
					order = append(order, name)
				}
				mu.Unlock()
				counted[k].Add(1)
				time.Sleep(200 * time.Microsecond)
				return nil
			},
			Meters: []bench.Meter{{Name: "m", Read: func() (time.Duration, error) {
				return time.Duration(counted[k].Load()) * time.Microsecond, nil
			}}},
		}
	}
	a, b := bench.Compare(context.Background(), 2, 4, 0, 80*time.Millisecond, target("a", 0), target("b", 1))
	if got := strings.Join(order, " "); got != "a b a b a" {
		t.Errorf("turns in the order %q, want a b a b a (a b b a a b b a)", got)
	}
	for k, r := range []bench.Result{a, b} {
		if r.Calls == 0 || int64(r.Calls) != counted[k].Load() || r.Errors != 0 {
			t.Errorf("%s: %d calls counted, %d made", r.Target, r.Calls, counted[k].Load())
		}
		if len(r.CPU) != 1 || r.CPU[0].PerCall != time.Microsecond {
			t.Errorf("%s: CPU per call %+v, want the meter's 1µs a call over its own turns", r.Target, r.CPU)
		}
	}
}
