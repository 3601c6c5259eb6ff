package pool_test

import (
	"context"
	"testing"

	"github.com/hivemind/taskworker/internal/cluster"
)

// BenchmarkCallThroughPool measures a call of add through a pool to one of
// three workers, all in this process over loopback TCP.
func BenchmarkCallThroughPool(b *testing.B) {
	c := cluster.New(b, cluster.Options{Workers: 3})
	cl := c.Client(0)
	ctx := context.Background()
	args := []byte("[1, 2]")
	b.ReportAllocs()
	b.RunParallel(func(pb *testing.PB) {
		for pb.Next() {
			if _, err := cl.CallJSON(ctx, "add", args); err != nil {
				b.Error(err)
				return
			}
		}
	})
}
