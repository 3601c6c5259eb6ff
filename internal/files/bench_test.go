package files_test

import (
	"bytes"
	"context"
	"io"
	"math/rand/v2"
	"testing"

	"github.com/hivemind/taskworker/internal/cluster"
	"github.com/hivemind/taskworker/internal/files"
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

// largeCluster is six in-process workers (4+2) behind a pool with the
// pool's own file configuration (8 MiB blocks).
func largeCluster(b *testing.B) *cluster.Cluster {
	cfg := files.DefaultConfig("")
	cfg.RepairGrace = 0
	return cluster.New(b, cluster.Options{Workers: 6, Files: &cfg})
}

// benchFileBytes is the size of the file the large benchmarks move.
const benchFileBytes = 256 << 20

// randomReader yields n bytes that neither compress nor repeat within a
// block.
func randomReader(n int64) io.Reader {
	return io.LimitReader(rand.NewChaCha8([32]byte{1}), n)
}

// BenchmarkUploadLarge uploads a 256 MiB file through the pool: sealing,
// hashing, coding and six workers' disks, on the machine's cores.
func BenchmarkUploadLarge(b *testing.B) {
	c := largeCluster(b)
	cl := c.Client(0)
	b.SetBytes(benchFileBytes)
	b.ResetTimer()
	for range b.N {
		if _, err := cl.Upload(context.Background(), "large", randomReader(benchFileBytes)); err != nil {
			b.Fatal(err)
		}
	}
}

// BenchmarkDownloadLarge downloads a 256 MiB file through the pool.
func BenchmarkDownloadLarge(b *testing.B) {
	c := largeCluster(b)
	cl := c.Client(0)
	info, err := cl.Upload(context.Background(), "large", randomReader(benchFileBytes))
	if err != nil {
		b.Fatal(err)
	}
	b.SetBytes(benchFileBytes)
	b.ResetTimer()
	for range b.N {
		if _, err := cl.Download(context.Background(), info.FileId, 0, io.Discard); err != nil {
			b.Fatal(err)
		}
	}
	_ = bytes.MinRead
}
