package erasure

import (
	"errors"
	"fmt"
)

// Block sizes. DefaultBlockSize was chosen by BenchmarkEncode, BenchmarkDecode and the shard store's
// BenchmarkPut: the largest block that still encodes at full speed, whose 2 MiB 4+2 shards amortize a
// durable write's fsyncs; see docs/RATIONALE.md ("Why 8 MiB blocks?").
const (
	DefaultBlockSize = 8 << 20
	MaxBlockSize     = 256 << 20

	// MaxFileSize bounds Size so that block arithmetic cannot overflow; it is far above any real file.
	MaxFileSize = 1 << 56
)

// ErrFileInfo is returned (wrapped) for a FileInfo that does not describe a coded file.
var ErrFileInfo = errors.New("erasure: invalid file info")

// FileInfo describes a coded file: everything a reader needs besides the shards themselves. The Encoder
// produces it; the manifest stores it. Block b holds bytes [b*BlockSize, min((b+1)*BlockSize, Size)) of the
// file; each of its Shards() shards is ShardLen(b) bytes long, the last data shard padded with zeros.
type FileInfo struct {
	Layout    Layout
	BlockSize int
	Size      int64
	SHA256    [32]byte // of the whole file
	Sums      [][]Sum  // Sums[b][i] is the checksum of shard i of block b
}

// Blocks returns the number of blocks, ceil(Size/BlockSize); zero for an empty file.
func (f *FileInfo) Blocks() int64 {
	return (f.Size + int64(f.BlockSize) - 1) / int64(f.BlockSize)
}

// BlockOffset returns the file offset of block b's first byte.
func (f *FileInfo) BlockOffset(b int64) int64 { return b * int64(f.BlockSize) }

// BlockLen returns the number of file bytes in block b.
func (f *FileInfo) BlockLen(b int64) int {
	return int(min(int64(f.BlockSize), f.Size-f.BlockOffset(b)))
}

// ShardLen returns the length of every shard of block b.
func (f *FileInfo) ShardLen(b int64) int { return shardLen(f.BlockLen(b), f.Layout.Data) }

func shardLen(blockLen, data int) int { return (blockLen + data - 1) / data }

// Validate reports whether f is self-consistent. A FileInfo read back from outside (a manifest) must pass it
// before it is given to a Decoder.
func (f *FileInfo) Validate() error {
	if err := f.Layout.Validate(); err != nil {
		return err
	}
	if err := validateBlockSize(f.BlockSize); err != nil {
		return err
	}
	if f.Size < 0 || f.Size > MaxFileSize {
		return fmt.Errorf("%w: size %d is outside [0, %d]", ErrFileInfo, f.Size, int64(MaxFileSize))
	}
	if got, want := int64(len(f.Sums)), f.Blocks(); got != want {
		return fmt.Errorf("%w: %d blocks of checksums for a %d-byte file in %d-byte blocks (want %d)",
			ErrFileInfo, got, f.Size, f.BlockSize, want)
	}
	for b, sums := range f.Sums {
		if len(sums) != f.Layout.Shards() {
			return fmt.Errorf("%w: block %d has %d checksums; layout %s needs %d",
				ErrFileInfo, b, len(sums), f.Layout, f.Layout.Shards())
		}
	}
	return nil
}

func validateBlockSize(n int) error {
	if n < 1 || n > MaxBlockSize {
		return fmt.Errorf("%w: block size %d is outside [1, %d]; the default is %d",
			ErrFileInfo, n, MaxBlockSize, DefaultBlockSize)
	}
	return nil
}
