package erasure

import (
	"context"
	"crypto/sha256"
	"errors"
	"fmt"
	"io"
	"strings"

	"github.com/klauspost/reedsolomon"
)

// ShardSource fetches shards for a Decoder: shard i of block b, as the Encoder produced it. Any error means
// "unavailable here" and the Decoder tries another shard. ReadShard is called concurrently and must return
// once ctx is done. The returned slice then belongs to the Decoder.
type ShardSource interface {
	ReadShard(ctx context.Context, block int64, shard int) ([]byte, error)
}

// ShardSourceInto is a ShardSource that can also read a shard into a buffer it is given, which saves
// OpenBlock a copy of every data shard: they arrive where the block is laid out.
type ShardSourceInto interface {
	ShardSource
	// ReadShardInto is ReadShard, reading into buf (empty, with the shard's length as its capacity) and
	// returning buf extended by what it read; it may return another slice instead, which then belongs to
	// the Decoder. It must not write past buf's capacity, nor into buf once it has returned, whatever it
	// returns (an error, ctx's end).
	ReadShardInto(ctx context.Context, block int64, shard int, buf []byte) ([]byte, error)
}

// ShardSourceFunc adapts a function to ShardSource.
type ShardSourceFunc func(ctx context.Context, block int64, shard int) ([]byte, error)

// ReadShard calls f.
func (f ShardSourceFunc) ReadShard(ctx context.Context, block int64, shard int) ([]byte, error) {
	return f(ctx, block, shard)
}

var (
	// ErrShardChecksum marks a shard whose length or checksum is not the one recorded for it.
	ErrShardChecksum = errors.New("erasure: shard does not match its checksum")
	// ErrUnrecoverable marks a block with fewer than Layout.Data good shards; errors.As gives a *BlockError.
	ErrUnrecoverable = errors.New("erasure: too few good shards to rebuild the block")
	// ErrFileChecksum marks a whole-file read whose bytes do not hash to FileInfo.SHA256.
	ErrFileChecksum = errors.New("erasure: file does not match its SHA-256")
	// ErrRange marks a read outside the file.
	ErrRange = errors.New("erasure: range outside the file")
)

// BadShard is a shard a Decoder could not use: the source failed, or the shard failed its checksum.
type BadShard struct {
	Block int64
	Shard int
	Err   error
}

// BlockError says a block could not be rebuilt and why each shard it tried was unusable.
type BlockError struct {
	Block        int64
	Good, Needed int
	Bad          []BadShard
}

func (e *BlockError) Error() string {
	var b strings.Builder
	fmt.Fprintf(&b, "erasure: block %d: %d good shards of the %d needed", e.Block, e.Good, e.Needed)
	for _, s := range e.Bad {
		fmt.Fprintf(&b, "; shard %d: %v", s.Shard, s.Err)
	}
	return b.String()
}

// Unwrap makes errors.Is(err, ErrUnrecoverable) hold.
func (e *BlockError) Unwrap() error { return ErrUnrecoverable }

// Decoder reads a coded file back from its shards, checking every shard's checksum before using it (except
// where OpenBlock's caller authenticates the block instead), and fetching parity shards only when data shards
// are missing or bad. It holds one block at a time. Its
// methods may run on several goroutines at once if OnBadShard is safe for that.
type Decoder struct {
	info *FileInfo
	src  ShardSource
	rs   reedsolomon.Encoder

	// OnBadShard, if set, is called for every shard the Decoder fetched and could not use (the source
	// failed or the checksum did not match), so the caller can have it repaired. It is called from the
	// goroutine that called the Decoder's method; shards never fetched are not reported.
	OnBadShard func(BadShard)
}

// NewDecoder returns a Decoder for the file info describes, reading shards from src.
func NewDecoder(info *FileInfo, src ShardSource) (*Decoder, error) {
	if err := info.Validate(); err != nil {
		return nil, err
	}
	rs, err := codecFor(info.Layout)
	if err != nil {
		return nil, err
	}
	return &Decoder{info: info, src: src, rs: rs}, nil
}

// Copy writes the whole file to w and then checks it against FileInfo.SHA256, returning ErrFileChecksum on
// a mismatch. Every shard is verified before use, so a mismatch means the FileInfo itself is wrong.
func (d *Decoder) Copy(ctx context.Context, w io.Writer) (int64, error) {
	h := sha256.New()
	n, err := d.copyRange(ctx, io.MultiWriter(w, h), 0, d.info.Size)
	if err != nil {
		return n, err
	}
	if [32]byte(h.Sum(nil)) != d.info.SHA256 {
		return n, fmt.Errorf("%w: %d bytes read", ErrFileChecksum, n)
	}
	return n, nil
}

// CopyRange writes length bytes of the file from offset off to w, reading only the blocks that hold them.
func (d *Decoder) CopyRange(ctx context.Context, w io.Writer, off, length int64) (int64, error) {
	if off < 0 || length < 0 || off > d.info.Size || length > d.info.Size-off {
		return 0, fmt.Errorf("%w: %d bytes at offset %d of a %d-byte file", ErrRange, length, off, d.info.Size)
	}
	return d.copyRange(ctx, w, off, length)
}

func (d *Decoder) copyRange(ctx context.Context, w io.Writer, off, length int64) (int64, error) {
	if length == 0 {
		return 0, nil
	}
	bs := int64(d.info.BlockSize)
	end := off + length
	var written int64
	for b := off / bs; b <= (end-1)/bs; b++ {
		data, err := d.dataShards(ctx, b)
		if err != nil {
			return written, err
		}
		start := d.info.BlockOffset(b)
		lo, hi := max(off, start)-start, min(end, start+int64(d.info.BlockLen(b)))-start
		sl := int64(d.info.ShardLen(b))
		for i, shard := range data {
			s0, s1 := max(lo, int64(i)*sl), min(hi, int64(i+1)*sl)
			if s0 >= s1 {
				continue
			}
			n, err := w.Write(shard[s0-int64(i)*sl : s1-int64(i)*sl])
			written += int64(n)
			if err != nil {
				return written, err
			}
		}
	}
	return written, nil
}

// dataShards returns block b's data shards, rebuilt from parity where needed.
func (d *Decoder) dataShards(ctx context.Context, b int64) ([][]byte, error) {
	shards, err := d.fetch(ctx, b, nil)
	if err != nil {
		return nil, err
	}
	k := d.info.Layout.Data
	for _, s := range shards[:k] {
		if s == nil {
			if err := d.rs.ReconstructData(shards); err != nil {
				return nil, fmt.Errorf("erasure: block %d: %w", b, err)
			}
			break
		}
	}
	return shards[:k], nil
}

// Rebuild recomputes the lost shards of block b from the others, for repair: it returns the shards numbered
// lost, in that order, each checked against its recorded checksum. Shards in lost are never fetched.
func (d *Decoder) Rebuild(ctx context.Context, b int64, lost []int) ([][]byte, error) {
	if b < 0 || b >= d.info.Blocks() {
		return nil, fmt.Errorf("%w: block %d of a file with %d blocks", ErrRange, b, d.info.Blocks())
	}
	total := d.info.Layout.Shards()
	skip := make([]bool, total)
	for _, i := range lost {
		if i < 0 || i >= total || skip[i] {
			return nil, fmt.Errorf("erasure: lost shards %v: each must be a distinct index in [0, %d)", lost, total)
		}
		skip[i] = true
	}
	shards, err := d.fetch(ctx, b, skip)
	if err != nil {
		return nil, err
	}
	if err := d.rs.ReconstructSome(shards, skip); err != nil {
		return nil, fmt.Errorf("erasure: block %d: %w", b, err)
	}
	out := make([][]byte, len(lost))
	for j, i := range lost {
		if SumShard(shards[i]) != d.info.Sums[b][i] {
			return nil, fmt.Errorf("%w: rebuilt shard %d of block %d", ErrShardChecksum, i, b)
		}
		out[j] = shards[i]
	}
	return out, nil
}

type fetched struct {
	shard int
	data  []byte
	err   error
}

// fetch gets Layout.Data verified shards of block b, data shards first, skipping those marked in skip, and
// reports the ones it could not use to OnBadShard. The result has nil where no good shard was fetched.
func (d *Decoder) fetch(ctx context.Context, b int64, skip []bool) ([][]byte, error) {
	shards := make([][]byte, d.info.Layout.Shards())
	bad, err := d.gather(ctx, b, shards, skip, true, nil)
	d.report(bad)
	if err != nil {
		return nil, err
	}
	return shards, d.enough(b, shards, bad)
}

// gather fetches shards of block b into shards until Layout.Data of them are non-nil, data shards first,
// never fetching one marked in skip or already in shards. Fetches run concurrently; a failed one is replaced
// by the next untried shard. Every fetched shard's length is checked, and its checksum too if check is set.
// If into is not nil, a data shard i is read into into[i*ShardLen(b):], where the source can. It returns
// the shards it could not use, and ctx's error if ctx ended.
func (d *Decoder) gather(ctx context.Context, b int64, shards [][]byte, skip []bool, check bool, into []byte) ([]BadShard, error) {
	k, total := d.info.Layout.Data, d.info.Layout.Shards()
	want := d.info.ShardLen(b)
	results := make(chan fetched, total)
	good, next, inflight := 0, 0, 0
	for _, s := range shards {
		if s != nil {
			good++
		}
	}
	launch := func() {
		for next < total && (shards[next] != nil || skip != nil && skip[next]) {
			next++
		}
		if next == total || ctx.Err() != nil {
			return
		}
		i := next
		next++
		inflight++
		go func() {
			var data []byte
			var err error
			if src, ok := d.src.(ShardSourceInto); ok && into != nil && i < k {
				data, err = src.ReadShardInto(ctx, b, i, into[i*want:i*want:(i+1)*want])
			} else {
				data, err = d.src.ReadShard(ctx, b, i)
			}
			if err == nil {
				err = checkShard(data, want, d.info.Sums[b][i], check)
			}
			results <- fetched{shard: i, data: data, err: err}
		}()
	}
	for range k - good {
		launch()
	}
	var bad []BadShard
	for inflight > 0 {
		r := <-results
		inflight--
		switch {
		case r.err == nil:
			shards[r.shard] = r.data
		case ctx.Err() == nil:
			bad = append(bad, BadShard{Block: b, Shard: r.shard, Err: r.err})
			launch()
		}
	}
	return bad, ctx.Err()
}

// report hands the shards that could not be used to OnBadShard.
func (d *Decoder) report(bad []BadShard) {
	if d.OnBadShard != nil {
		for _, s := range bad {
			d.OnBadShard(s)
		}
	}
}

// enough returns a *BlockError unless shards holds Layout.Data shards of block b.
func (d *Decoder) enough(b int64, shards [][]byte, bad []BadShard) error {
	good := 0
	for _, s := range shards {
		if s != nil {
			good++
		}
	}
	if k := d.info.Layout.Data; good < k {
		return &BlockError{Block: b, Good: good, Needed: k, Bad: bad}
	}
	return nil
}

// OpenBlock reads block b for a caller that authenticates each block itself, as a file sealed with an AEAD
// is: it puts the block's bytes in dst (used as it is when its capacity is at least BufferLen(b), else
// replaced) and returns what open makes of them. The data shards are fetched first without their checksums,
// into dst where the source is a ShardSourceInto; when all of them arrive and open accepts the block, that is
// the answer, and no shard was hashed. Otherwise the shards are checked against their checksums (those open
// may have overwritten are fetched again first), the bad ones reported to OnBadShard and rebuilt from parity,
// and open is called once more, on the block so checked, its error returned as it is.
//
// Skipping the checksums is sound only when open authenticates: a block it accepts must be the block that
// was written, whatever bytes the workers served. See docs/RATIONALE.md ("Why are a sealed block's shards
// not hashed when it opens?").
func (d *Decoder) OpenBlock(ctx context.Context, b int64, dst []byte, open func(block []byte) ([]byte, error)) ([]byte, error) {
	if b < 0 || b >= d.info.Blocks() {
		return nil, fmt.Errorf("%w: block %d of a file with %d blocks", ErrRange, b, d.info.Blocks())
	}
	k, total := d.info.Layout.Data, d.info.Layout.Shards()
	var into []byte // where the data shards are read, if the source can
	if _, ok := d.src.(ShardSourceInto); ok {
		if cap(dst) < d.BufferLen(b) {
			dst = make([]byte, 0, d.BufferLen(b))
		}
		into = dst[:d.BufferLen(b)]
	}
	shards := make([][]byte, total)
	skip := make([]bool, total)
	for i := k; i < total; i++ {
		skip[i] = true // the data shards alone, first
	}
	bad, err := d.gather(ctx, b, shards, skip, false, into)
	if err != nil {
		d.report(bad)
		return nil, err
	}
	if len(bad) == 0 {
		if out, err := open(d.assemble(dst, b, shards)); err == nil {
			return out, nil
		}
		// open may have overwritten the block (AES-GCM clears what it
		// was opening when the tag does not match), and with it the
		// shards read into it: they are fetched again.
		if into != nil {
			clear(shards[:k])
		}
	}
	clear(skip)
	for _, s := range bad {
		skip[s.Shard] = true // a source that failed once is not asked again for this block
	}
	for i, s := range shards[:k] {
		if s != nil && SumShard(s) != d.info.Sums[b][i] {
			bad = append(bad, BadShard{Block: b, Shard: i, Err: ErrShardChecksum})
			shards[i], skip[i] = nil, true
		}
	}
	more, err := d.gather(ctx, b, shards, skip, true, into)
	bad = append(bad, more...)
	d.report(bad)
	if err != nil {
		return nil, err
	}
	if err := d.enough(b, shards, bad); err != nil {
		return nil, err
	}
	if err := d.rs.ReconstructData(shards); err != nil {
		return nil, fmt.Errorf("erasure: block %d: %w", b, err)
	}
	return open(d.assemble(dst, b, shards))
}

// BufferLen is the capacity OpenBlock needs of dst to read block b's data shards in place: their total
// length, a little more than the block's where Layout.Data does not divide it.
func (d *Decoder) BufferLen(b int64) int { return d.info.Layout.Data * d.info.ShardLen(b) }

// assemble lays block b's bytes, its data shards without the padding, in dst's storage (grown only if it
// has less than BlockLen(b) bytes' capacity), copying no shard already in its place there.
func (d *Decoder) assemble(dst []byte, b int64, shards [][]byte) []byte {
	n := d.info.BlockLen(b)
	if cap(dst) < n {
		dst = make([]byte, n)
	}
	dst = dst[:n]
	off := 0
	for _, s := range shards[:d.info.Layout.Data] {
		m := min(len(s), n-off)
		if m > 0 && &s[0] != &dst[off] {
			copy(dst[off:off+m], s[:m])
		}
		off += m
	}
	return dst
}

// checkShard checks a fetched shard's length, and its checksum if check is set.
func checkShard(data []byte, want int, sum Sum, check bool) error {
	if len(data) != want {
		return fmt.Errorf("%w: %d bytes, want %d", ErrShardChecksum, len(data), want)
	}
	if check && SumShard(data) != sum {
		return ErrShardChecksum
	}
	return nil
}
