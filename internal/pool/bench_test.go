package pool_test

import (
	"context"
	"runtime"
	"strconv"
	"testing"

	"github.com/hivemind/taskworker/internal/cluster"
)

// BenchmarkCallThroughPool measures a call of add through a pool to one of
// three workers, all in this process over loopback TCP and TLS: with
// GOMAXPROCS callers (the figure docs/BENCHMARKS.md has tracked since the
// first round) and with 64, as `taskworker bench call` does. Allocations
// per call count the client's, the pool's and the worker's together.
func BenchmarkCallThroughPool(b *testing.B) {
	c := cluster.New(b, cluster.Options{Workers: 3})
	cl := c.Client(0)
	ctx := context.Background()
	args := []byte("[1, 2]")
	procs := runtime.GOMAXPROCS(0)
	for _, callers := range []int{procs, 64} {
		b.Run("callers-"+strconv.Itoa(callers), func(b *testing.B) {
			b.ReportAllocs()
			b.SetParallelism(max(1, callers/procs))
			b.RunParallel(func(pb *testing.PB) {
				for pb.Next() {
					if _, err := cl.CallJSON(ctx, "add", args); err != nil {
						b.Error(err)
						return
					}
				}
			})
		})
	}
}
