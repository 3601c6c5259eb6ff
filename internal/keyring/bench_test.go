package keyring_test

import (
	"crypto/sha256"
	"path/filepath"
	"testing"

	"github.com/hivemind/taskworker/internal/keyring"
)

// BenchmarkSealer measures AES-256-GCM on file blocks, what sealing adds to
// a write and a read (MB/s), beside SHA-256 of the same block, which every
// write and whole read computes too.
func BenchmarkSealer(b *testing.B) {
	for _, size := range []struct {
		name string
		n    int
	}{{"64KiB", 64 << 10}, {"8MiB", 8 << 20}} {
		s, err := keyring.NewDataKey().Sealer()
		if err != nil {
			b.Fatal(err)
		}
		plain := make([]byte, size.n)
		sealed := s.Seal(nil, 0, plain)
		b.Run("Seal/"+size.name, func(b *testing.B) {
			b.SetBytes(int64(size.n))
			out := make([]byte, 0, size.n+keyring.Overhead)
			for i := range b.N {
				out = s.Seal(out[:0], uint64(i), plain)
			}
		})
		b.Run("Open/"+size.name, func(b *testing.B) {
			b.SetBytes(int64(size.n))
			out := make([]byte, 0, size.n)
			for range b.N {
				if out, err = s.Open(out[:0], 0, sealed); err != nil {
					b.Fatal(err)
				}
			}
		})
		b.Run("SHA256/"+size.name, func(b *testing.B) {
			b.SetBytes(int64(size.n))
			for range b.N {
				sha256.Sum256(plain)
			}
		})
	}
}

// BenchmarkUnwrap measures what a read pays to get its version's data key
// back and a sealer of it: the reason the file service keeps no cache of
// unwrapped keys.
func BenchmarkUnwrap(b *testing.B) {
	k, err := keyring.Open(filepath.Join(b.TempDir(), keyring.FileName))
	if err != nil {
		b.Fatal(err)
	}
	wrapped, err := k.Wrap(keyring.NewDataKey(), "file f write w")
	if err != nil {
		b.Fatal(err)
	}
	for b.Loop() {
		d, err := k.Unwrap(wrapped, "file f write w")
		if err != nil {
			b.Fatal(err)
		}
		if _, err := d.Sealer(); err != nil {
			b.Fatal(err)
		}
	}
}
