package shardstore

import (
	"bytes"
	"fmt"
	"runtime"
	"sync/atomic"
	"testing"
)

var benchShardSizes = []int{64 << 10, 256 << 10, 1 << 20, 2 << 20, 4 << 20, 16 << 20}

func sizeName(n int) string {
	if n >= 1<<20 {
		return fmt.Sprintf("%dMiB", n>>20)
	}
	return fmt.Sprintf("%dKiB", n>>10)
}

// BenchmarkPut is one durable shard write per op (temp file, fsync, rename, directory fsync), cycling over
// 16 keys so the disk does not fill. With 4+2, a shard is a quarter of a block.
func BenchmarkPut(b *testing.B) {
	for _, size := range benchShardSizes {
		b.Run("shard="+sizeName(size), func(b *testing.B) {
			s, err := Open(DefaultConfig(b.TempDir()))
			if err != nil {
				b.Fatal(err)
			}
			defer s.Close()
			data := payload(1, size)
			b.SetBytes(int64(size))
			i := 0
			for b.Loop() {
				if _, err := s.Put(b.Context(), key("bench", int64(i%16), 0), bytes.NewReader(data)); err != nil {
					b.Fatal(err)
				}
				i++
			}
		})
	}
}

// BenchmarkGet reads and verifies a shard (from the page cache: this is the CPU cost, not the disk's).
func BenchmarkGet(b *testing.B) {
	for _, size := range benchShardSizes {
		b.Run("shard="+sizeName(size), func(b *testing.B) {
			s, err := Open(DefaultConfig(b.TempDir()))
			if err != nil {
				b.Fatal(err)
			}
			defer s.Close()
			k := key("bench", 0, 0)
			put(b, s, k, payload(1, size))
			b.SetBytes(int64(size))
			for b.Loop() {
				if _, _, err := s.Get(b.Context(), k); err != nil {
					b.Fatal(err)
				}
			}
		})
	}
}

// BenchmarkPutParallel is six writers at once, as six workers on one machine during a 4+2 write: the
// journal commits their fsyncs together. MB/s is the aggregate.
func BenchmarkPutParallel(b *testing.B) {
	for _, size := range benchShardSizes {
		b.Run("shard="+sizeName(size), func(b *testing.B) {
			s, err := Open(DefaultConfig(b.TempDir()))
			if err != nil {
				b.Fatal(err)
			}
			defer s.Close()
			data := payload(1, size)
			var writer atomic.Int64
			b.SetBytes(int64(size))
			b.SetParallelism(6 / max(1, runtime.GOMAXPROCS(0)))
			b.RunParallel(func(pb *testing.PB) {
				w := writer.Add(1)
				for i := 0; pb.Next(); i++ {
					k := Key{FileID: "bench", WriteID: fmt.Sprint("w", w), Block: int64(i % 16)}
					if _, err := s.Put(b.Context(), k, bytes.NewReader(data)); err != nil {
						b.Error(err)
						return
					}
				}
			})
		})
	}
}
