package bench

import (
	"context"
	"fmt"
	"sync"
	"sync/atomic"
	"time"
)

// FairResult is one measurement of fair sharing: another tenant's calls
// alone, then while one tenant floods.
type FairResult struct {
	Alone, Flooded Result
	// FloodCalls is how many flood calls ran at once; FloodEnded how many
	// ended (each when it ran out of time or failed) during the flooded run.
	FloodCalls int
	FloodEnded int64
}

// Ratio is the flooded p99 over the p99 alone: 1 is no harm at all.
func (r FairResult) Ratio() float64 { return float64(r.Flooded.P99) / float64(r.Alone.P99) }

func (r FairResult) String() string {
	return fmt.Sprintf("%s\n%s\nflooded/alone p99: %.2fx (%d flood calls at once; %d of them ended during the run)",
		r.Alone, r.Flooded, r.Ratio(), r.FloodCalls, r.FloodEnded)
}

// Fair measures call, made by one tenant at concurrency 1, first alone,
// then while floodCalls goroutines of another tenant make flood calls back
// to back (each expected to hold its process until its time limit). Each run
// has its warmup; the flood starts before the second warmup, so that the
// measured window sees it settled.
func Fair(ctx context.Context, warmup, duration time.Duration, call func(context.Context) error, floodCalls int, flood func(context.Context) error) FairResult {
	r := FairResult{FloodCalls: floodCalls}
	r.Alone = Run(ctx, "alone", 1, warmup, duration, call)
	r.Alone.Target = "alone"

	floodCtx, stop := context.WithCancel(ctx)
	var wg sync.WaitGroup
	var ended atomic.Int64
	for range floodCalls {
		wg.Go(func() {
			for floodCtx.Err() == nil {
				_ = flood(floodCtx)
				ended.Add(1)
			}
		})
	}
	if warmup > 0 {
		run(ctx, 1, warmup, call)
	}
	before := ended.Load()
	r.Flooded = Run(ctx, "flooded", 1, 0, duration, call)
	r.FloodEnded = ended.Load() - before
	stop()
	wg.Wait()
	return r
}
