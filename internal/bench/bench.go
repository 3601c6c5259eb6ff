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
	var w window
	w.measure(ctx, concurrency, duration, call, meters)
	return w.result(target, concurrency, meters)
}

// A Target is one side of a comparison: a call and the meters of the
// processes it costs.
type Target struct {
	Name   string
	Call   func(context.Context) error
	Meters []Meter
}

// Compare measures a and b at one concurrency in the same stretch of time:
// after each one's warmup, it runs them in turns, turns times each, for
// duration/turns a turn, in the order a b b a a b b a..., and sums each
// one's turns. On a machine whose speed drifts (other virtual machines, a
// burst of writes to the disk), two runs one after the other measure the
// drift as much as the difference between a and b; turns in that order
// expose both to it alike, to first order.
func Compare(ctx context.Context, concurrency, turns int, warmup, duration time.Duration, a, b Target) (Result, Result) {
	turns = max(1, turns)
	targets := [2]Target{a, b}
	var windows [2]window
	for _, t := range targets {
		if warmup > 0 {
			run(ctx, concurrency, warmup, t.Call)
		}
	}
	turn := duration / time.Duration(turns)
	for i := range 2 * turns {
		k := (i + i/2) % 2 // 0 1 1 0 0 1 1 0 ...
		windows[k].measure(ctx, concurrency, turn, targets[k].Call, targets[k].Meters)
	}
	return windows[0].result(a.Name, concurrency, a.Meters), windows[1].result(b.Name, concurrency, b.Meters)
}

// window is what measured runs of one call added up to.
type window struct {
	lats    []time.Duration
	errs    int
	first   error
	elapsed time.Duration
	cpu     []time.Duration // per meter, summed over the runs; -1 once a reading failed
}

// measure runs call for d and adds it to the window, with the meters read
// around it.
func (w *window) measure(ctx context.Context, concurrency int, d time.Duration, call func(context.Context) error, meters []Meter) {
	before := readMeters(meters)
	lats, errs, first, elapsed := run(ctx, concurrency, d, call)
	after := readMeters(meters)
	if w.cpu == nil {
		w.cpu = make([]time.Duration, len(meters))
	}
	for i := range meters {
		if before[i] < 0 || after[i] < 0 || w.cpu[i] < 0 {
			w.cpu[i] = -1
			continue
		}
		w.cpu[i] += after[i] - before[i]
	}
	w.lats = append(w.lats, lats...)
	w.errs += errs
	if w.first == nil {
		w.first = first
	}
	w.elapsed += elapsed
}

func (w *window) result(target string, concurrency int, meters []Meter) Result {
	r := Result{Target: target, Concurrency: concurrency, Calls: len(w.lats), Errors: w.errs, FirstError: w.first,
		Elapsed: w.elapsed, CPU: perCall(meters, make([]time.Duration, len(meters)), w.cpu, len(w.lats))}
	if lats := w.lats; len(lats) > 0 {
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
