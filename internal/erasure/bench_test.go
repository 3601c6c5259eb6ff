package erasure

import (
	"bytes"
	"context"
	"crypto/sha256"
	"fmt"
	"hash/crc32"
	"io"
	"math/rand/v2"
	"testing"

	"github.com/zeebo/blake3"
)

// benchInput is 64 MiB: larger than the caches, so the figures are out-of-cache throughput.
const benchInput = 64 << 20

var benchBlockSizes = []int{64 << 10, 256 << 10, 1 << 20, 4 << 20, 8 << 20, 16 << 20, 64 << 20}

func benchData(b *testing.B) []byte {
	b.Helper()
	data := make([]byte, benchInput)
	_, _ = rand.NewChaCha8([32]byte{}).Read(data)
	return data
}

func sizeName(n int) string {
	if n >= 1<<20 {
		return fmt.Sprintf("%dMiB", n>>20)
	}
	return fmt.Sprintf("%dKiB", n>>10)
}

// BenchmarkEncode is the Encoder's whole path per block size: read, Reed-Solomon 4+2, a BLAKE3 sum per
// shard, the file's SHA-256. MB/s counts file bytes.
func BenchmarkEncode(b *testing.B) {
	data := benchData(b)
	for _, bs := range benchBlockSizes {
		b.Run("block="+sizeName(bs), func(b *testing.B) {
			b.SetBytes(benchInput)
			for b.Loop() {
				enc, err := NewEncoder(bytes.NewReader(data), DefaultLayout, bs)
				if err != nil {
					b.Fatal(err)
				}
				for {
					if _, err := enc.Next(); err == io.EOF {
						break
					} else if err != nil {
						b.Fatal(err)
					}
				}
			}
		})
	}
}

// BenchmarkReedSolomon is the coding alone, 4+2, per block size, for comparison with BenchmarkEncode.
func BenchmarkReedSolomon(b *testing.B) {
	data := benchData(b)
	rs, _ := codecFor(DefaultLayout)
	for _, bs := range benchBlockSizes {
		b.Run("block="+sizeName(bs), func(b *testing.B) {
			sl := bs / 4
			parity := [][]byte{make([]byte, sl), make([]byte, sl)}
			b.SetBytes(benchInput)
			for b.Loop() {
				for off := 0; off < len(data); off += bs {
					shards := [][]byte{data[off : off+sl], data[off+sl : off+2*sl], data[off+2*sl : off+3*sl], data[off+3*sl : off+4*sl], parity[0], parity[1]}
					if err := rs.Encode(shards); err != nil {
						b.Fatal(err)
					}
				}
			}
		})
	}
}

// BenchmarkDecode reads a 64 MiB 4+2 file back from memory per block size: "intact" verifies the four
// data shards of each block; "2lost" loses two data shards per block and rebuilds them from parity.
func BenchmarkDecode(b *testing.B) {
	data := benchData(b)
	for _, bs := range benchBlockSizes {
		c := encode(b, data, DefaultLayout, bs)
		for _, lost := range []int{0, 2} {
			name := "intact"
			if lost > 0 {
				name = "2lost"
			}
			b.Run(fmt.Sprintf("block=%s/%s", sizeName(bs), name), func(b *testing.B) {
				src := ShardSourceFunc(func(_ context.Context, blk int64, i int) ([]byte, error) {
					if i < lost {
						return nil, io.ErrUnexpectedEOF
					}
					return c.shards[blk][i], nil
				})
				dec, err := NewDecoder(c.info, src)
				if err != nil {
					b.Fatal(err)
				}
				b.SetBytes(benchInput)
				for b.Loop() {
					if _, err := dec.Copy(b.Context(), io.Discard); err != nil {
						b.Fatal(err)
					}
				}
			})
		}
	}
}

// BenchmarkChecksum compares the candidate shard checksums on 1 MiB, in cache.
func BenchmarkChecksum(b *testing.B) {
	buf := benchData(b)[:1<<20]
	table := crc32.MakeTable(crc32.Castagnoli)
	for name, sum := range map[string]func([]byte){
		"crc32c": func(p []byte) { crc32.Checksum(p, table) },
		"sha256": func(p []byte) { sha256.Sum256(p) },
		"blake3": func(p []byte) { blake3.Sum256(p) },
	} {
		b.Run(name, func(b *testing.B) {
			b.SetBytes(int64(len(buf)))
			for b.Loop() {
				sum(buf)
			}
		})
	}
}
