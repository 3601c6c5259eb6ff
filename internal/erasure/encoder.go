package erasure

import (
	"crypto/sha256"
	"errors"
	"fmt"
	"hash"
	"io"

	"github.com/klauspost/reedsolomon"
)

// Block is one coded block as the Encoder hands it out.
type Block struct {
	Index  int64    // block number, from 0
	Offset int64    // file offset of the block's first byte
	Len    int      // file bytes in the block
	Shards [][]byte // Layout.Shards() shards of equal length: data shards, then parity shards
	Sums   []Sum    // Sums[i] is the checksum of Shards[i]
}

// Encoder cuts a stream into blocks and codes each one. Only one block is in memory at a time: its buffers
// are reused by the next call to Next, so a caller that keeps shards past that must copy them.
type Encoder struct {
	r      io.Reader
	info   FileInfo
	rs     reedsolomon.Encoder
	sha    hash.Hash
	data   []byte // grows up to Data*ShardLen of a full block; small files never allocate a full block
	parity []byte
	block  Block
	err    error // sticky: io.EOF once the stream is done, or the first failure
}

// firstRead is the initial size of the data buffer; it doubles up to the block size, so a 1 KiB file costs
// a 64 KiB buffer, not a whole block.
const firstRead = 64 << 10

// NewEncoder returns an Encoder that reads r to its end in blocks of blockSize bytes coded with layout l.
func NewEncoder(r io.Reader, l Layout, blockSize int) (*Encoder, error) {
	if err := validateBlockSize(blockSize); err != nil {
		return nil, err
	}
	rs, err := codecFor(l)
	if err != nil {
		return nil, err
	}
	return &Encoder{
		r:    r,
		info: FileInfo{Layout: l, BlockSize: blockSize},
		rs:   rs,
		sha:  sha256.New(),
		block: Block{
			Shards: make([][]byte, l.Shards()),
			Sums:   make([]Sum, l.Shards()),
		},
	}, nil
}

// Next reads and codes the next block. It returns io.EOF after the last block (at once for an empty
// stream), and the reader's error if reading fails; after either, it keeps returning that error.
func (e *Encoder) Next() (*Block, error) {
	if e.err != nil {
		return nil, e.err
	}
	n, err := e.fill()
	if err != nil {
		e.err = err
		return nil, err
	}
	if n == 0 {
		e.err = io.EOF
		copy(e.info.SHA256[:], e.sha.Sum(nil))
		return nil, io.EOF
	}
	if e.info.Size+int64(n) > MaxFileSize {
		e.err = fmt.Errorf("%w: the stream is longer than %d bytes", ErrFileInfo, int64(MaxFileSize))
		return nil, e.err
	}
	// The file's SHA-256 is the slowest step and cannot be split, so it runs beside the coding and the
	// shard sums (which touch only the padding past n and the parity buffer).
	shaDone := make(chan struct{})
	go func() {
		e.sha.Write(e.data[:n])
		close(shaDone)
	}()
	defer func() { <-shaDone }()

	k, m := e.info.Layout.Data, e.info.Layout.Parity
	sl := shardLen(n, k)
	clear(e.data[n : k*sl]) // the last data shard's padding
	if len(e.parity) < m*sl {
		e.parity = make([]byte, min(max(m*sl, 2*len(e.parity)), m*shardLen(e.info.BlockSize, k)))
	}
	b := &e.block
	for i := range k {
		b.Shards[i] = e.data[i*sl : (i+1)*sl : (i+1)*sl]
	}
	for i := range m {
		b.Shards[k+i] = e.parity[i*sl : (i+1)*sl : (i+1)*sl]
	}
	if err := codeShards(e.rs, m, b.Shards, b.Sums); err != nil {
		e.err = fmt.Errorf("erasure: encoding block %d: %w", len(e.info.Sums), err)
		return nil, e.err
	}

	b.Index = int64(len(e.info.Sums))
	b.Offset = e.info.Size
	b.Len = n
	e.info.Sums = append(e.info.Sums, append([]Sum(nil), b.Sums...))
	e.info.Size += int64(n)
	return b, nil
}

// fill reads up to one block into e.data and returns how many bytes it read; 0 means the stream is done.
func (e *Encoder) fill() (int, error) {
	k, bs := e.info.Layout.Data, e.info.BlockSize
	full := k * shardLen(bs, k) // room for a full block's data shards, padding included
	n := 0
	for n < bs {
		if n == len(e.data) {
			grown := make([]byte, min(max(2*len(e.data), firstRead), full))
			copy(grown, e.data[:n])
			e.data = grown
		}
		got, err := io.ReadFull(e.r, e.data[n:min(len(e.data), bs)])
		n += got
		if errors.Is(err, io.EOF) || errors.Is(err, io.ErrUnexpectedEOF) {
			break
		}
		if err != nil {
			return 0, fmt.Errorf("erasure: reading block %d: %w", len(e.info.Sums), err)
		}
	}
	if need := k * shardLen(n, k); len(e.data) < need {
		grown := make([]byte, min(max(need, 2*len(e.data)), full))
		copy(grown, e.data[:n])
		e.data = grown
	}
	return n, nil
}

// Info returns the FileInfo of the whole stream, the SHA-256 included. It fails until Next has returned
// io.EOF, since until then the stream is not fully read.
func (e *Encoder) Info() (*FileInfo, error) {
	if e.err != io.EOF {
		return nil, errors.New("erasure: Info called before Next returned io.EOF")
	}
	info := e.info
	return &info, nil
}

// codeShards computes the parity shards of a block (the last m of shards) from its data shards, and the
// sums of all of them.
func codeShards(rs reedsolomon.Encoder, m int, shards [][]byte, sums []Sum) error {
	if m > 0 {
		if err := rs.Encode(shards); err != nil {
			return err
		}
	}
	sumShards(sums, shards)
	return nil
}

// Coder codes blocks in buffers its caller fills: the Encoder's work for a writer that produces each block
// itself (sealing it in place, say) and keeps the shards past the next block, without the Encoder's reads,
// copies and SHA-256 of the stream. A Coder is safe for concurrent use on distinct buffers.
type Coder struct {
	l         Layout
	blockSize int
	rs        reedsolomon.Encoder
}

// NewCoder returns a Coder of blocks of at most blockSize bytes in layout l.
func NewCoder(l Layout, blockSize int) (*Coder, error) {
	if err := validateBlockSize(blockSize); err != nil {
		return nil, err
	}
	rs, err := codecFor(l)
	if err != nil {
		return nil, err
	}
	return &Coder{l: l, blockSize: blockSize, rs: rs}, nil
}

// BufferLen is the length of the buffer Code needs for a block of n bytes: its data shards, padding
// included, then its parity shards. BufferLen(blockSize) holds any block.
func (c *Coder) BufferLen(n int) int { return c.l.Shards() * shardLen(n, c.l.Data) }

// Code codes in place the block of n bytes (1 to the block size) at the start of buf, which must be
// at least BufferLen(n) bytes long: it pads the last data shard with zeros, writes the parity shards after the data
// shards, and returns the shards, slices of buf (data shards, then parity shards), with their sums. The
// shards are valid until buf is reused.
func (c *Coder) Code(buf []byte, n int) ([][]byte, []Sum, error) {
	if n < 1 || n > c.blockSize || len(buf) < c.BufferLen(n) {
		return nil, nil, fmt.Errorf("erasure: coding %d bytes (blocks of at most %d) in a buffer of %d; it needs %d", n, c.blockSize, len(buf), c.BufferLen(n))
	}
	k := c.l.Data
	sl := shardLen(n, k)
	clear(buf[n : k*sl])
	shards := make([][]byte, c.l.Shards())
	for i := range shards {
		shards[i] = buf[i*sl : (i+1)*sl : (i+1)*sl]
	}
	sums := make([]Sum, len(shards))
	if err := codeShards(c.rs, c.l.Parity, shards, sums); err != nil {
		return nil, nil, fmt.Errorf("erasure: encoding a block: %w", err)
	}
	return shards, sums, nil
}
