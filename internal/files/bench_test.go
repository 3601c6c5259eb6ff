package files_test

import (
	"context"
	"testing"

	"github.com/hivemind/taskworker/internal/cluster"
)

// BenchmarkPushSmall pushes 1 KiB files through a pool to six in-process
// workers (4+2), 16 at a time.
func BenchmarkPushSmall(b *testing.B) {
	c := cluster.New(b, cluster.Options{Workers: 6})
	cl := c.Client(0)
	data := make([]byte, 1024)
	b.SetParallelism(8)
	b.ResetTimer()
	b.RunParallel(func(pb *testing.PB) {
		for pb.Next() {
			if _, err := cl.Push(context.Background(), "small", data); err != nil {
				b.Error(err)
				return
			}
		}
	})
}
