// Package bench drives a call at a fixed concurrency for a fixed time and
// reports its throughput and latency percentiles: the engine of
// `taskworker bench`.
package bench

import (
	"context"
	"fmt"
	"slices"
	"sync"
	"time"
)

// Result is one measurement.
type Result struct {
	Target      string
	Concurrency int
	Calls       int
	Errors      int
	FirstError  error
	Elapsed     time.Duration
	// Latencies of successful calls.
	P50, P99, P999 time.Duration
	// CPU per call of each meter given to Run, over the measured window.
	CPU []CPU
}

// Rate is successful calls per second.
func (r Result) Rate() float64 { return float64(r.Calls) / r.Elapsed.Seconds() }

func (r Result) String() string {
	return fmt.Sprintf("%-8s %5d %10.0f %10s %10s %10s %7d", r.Target, r.Concurrency, r.Rate(),
		round(r.P50), round(r.P99), round(r.P999), r.Errors)
}

// Header names the columns of Result.String.
const Header = "target   conc.    calls/s        p50        p99       p999  errors"

func round(d time.Duration) time.Duration {
	switch {
	case d > time.Second:
		return d.Round(time.Millisecond)
	case d > time.Millisecond:
		return d.Round(10 * time.Microsecond)
	}
	return d.Round(time.Microsecond)
}

// Run calls call from concurrency goroutines, first for warmup (not
// measured), then for duration; meters are read around the measured part.
func Run(ctx context.Context, target string, concurrency int, warmup, duration time.Duration, call func(context.Context) error, meters ...Meter) Result {
	if warmup > 0 {
		run(ctx, concurrency, warmup, call)
	}
	before := readMeters(meters)
	lats, errs, first, elapsed := run(ctx, concurrency, duration, call)
	after := readMeters(meters)
	r := Result{Target: target, Concurrency: concurrency, Calls: len(lats), Errors: errs, FirstError: first, Elapsed: elapsed,
		CPU: perCall(meters, before, after, len(lats))}
	if len(lats) > 0 {
		slices.Sort(lats)
		at := func(q float64) time.Duration { return lats[min(len(lats)-1, int(q*float64(len(lats))))] }
		r.P50, r.P99, r.P999 = at(0.50), at(0.99), at(0.999)
	}
	return r
}

func run(ctx context.Context, concurrency int, d time.Duration, call func(context.Context) error) ([]time.Duration, int, error, time.Duration) {
	ctx, cancel := context.WithCancel(ctx)
	defer cancel()
	var (
		mu    sync.Mutex
		all   []time.Duration
		errs  int
		first error
		wg    sync.WaitGroup
	)
	start := time.Now()
	stop := start.Add(d)
	for range concurrency {
		wg.Go(func() {
			lats := make([]time.Duration, 0, 4096)
			n := 0
			var firstErr error
			for {
				t0 := time.Now()
				if !t0.Before(stop) || ctx.Err() != nil {
					break
				}
				if err := call(ctx); err != nil {
					n++
					if firstErr == nil {
						firstErr = err
					}
					continue
				}
				lats = append(lats, time.Since(t0))
			}
			mu.Lock()
			all = append(all, lats...)
			errs += n
			if first == nil {
				first = firstErr
			}
			mu.Unlock()
		})
	}
	wg.Wait()
	return all, errs, first, time.Since(start)
}
