package erasure

import (
	"bytes"
	"context"
	"crypto/sha256"
	"errors"
	"fmt"
	"math/rand/v2"
	"sync/atomic"
	"testing"
)

// authenticator stands in for an AEAD in these tests: it accepts a block
// only if it is the block that was written (by its SHA-256), and, like
// AES-GCM opening in place, clears what it was given when it refuses.
type authenticator struct {
	want  [][32]byte // per block
	calls atomic.Int64
}

var errForged = errors.New("message authentication failed")

func newAuthenticator(data []byte, blockSize int) *authenticator {
	a := &authenticator{}
	for off := 0; off < len(data); off += blockSize {
		a.want = append(a.want, sha256.Sum256(data[off:min(off+blockSize, len(data))]))
	}
	return a
}

func (a *authenticator) open(b int64) func([]byte) ([]byte, error) {
	return func(block []byte) ([]byte, error) {
		a.calls.Add(1)
		if sha256.Sum256(block) != a.want[b] {
			clear(block)
			return nil, errForged
		}
		return block, nil
	}
}

// intoSource is a memSource that reads shards into the buffers it is
// given (a ShardSourceInto), refusing a shard longer than the buffer, or,
// if misplace is set, into buffers of its own.
type intoSource struct {
	*memSource
	misplace bool
}

func (s intoSource) ReadShardInto(ctx context.Context, block int64, shard int, buf []byte) ([]byte, error) {
	data, err := s.ReadShard(ctx, block, shard)
	if err != nil || s.misplace {
		return data, err
	}
	if len(data) > cap(buf) {
		return nil, fmt.Errorf("%d bytes, more than the shard's %d", len(data), cap(buf))
	}
	return append(buf, data...), nil
}

// TestOpenBlock: with up to Parity shards of each block missing, short or
// forged, OpenBlock still hands every block back as written, reports every
// damaged data shard and never an intact one, and an intact block costs
// exactly its data shards and one call of open, and the block is put in
// the buffer given; whether the source reads shards where it is told to,
// elsewhere, or cannot be told.
func TestOpenBlock(t *testing.T) {
	for _, l := range testLayouts {
		for _, damaged := range []int{0, 1, l.Parity} {
			for _, source := range []string{"plain", "into", "misplaced"} {
				if damaged > l.Parity || damaged == 0 && l.Parity > 0 && source != "into" {
					continue
				}
				t.Run(fmt.Sprintf("%s/damaged=%d/%s", l, damaged, source), func(t *testing.T) {
					t.Parallel()
					testOpenBlock(t, l, damaged, source)
				})
			}
		}
	}
}

func testOpenBlock(t *testing.T, l Layout, damaged int, source string) {
	const bs = 999
	rng := rand.New(rand.NewPCG(uint64(l.Shards()), uint64(damaged)))
	data := randomBytes(rng, 7*bs+123)
	c := encode(t, data, l, bs)
	src := &memSource{c: c}
	src.damageBlocks(rng, damaged)
	var dec *Decoder
	switch source {
	case "plain":
		dec, _ = NewDecoder(c.info, src)
	default:
		dec, _ = NewDecoder(c.info, intoSource{src, source == "misplaced"})
	}
	allReported := src.checkReports(t, dec)
	auth := newAuthenticator(data, bs)
	buf := make([]byte, 0, dec.BufferLen(0))
	for b := range c.info.Blocks() {
		fetches, opens := src.fetches.Load(), auth.calls.Load()
		got, err := dec.OpenBlock(t.Context(), b, buf, auth.open(b))
		if err != nil {
			t.Fatalf("block %d: %v", b, err)
		}
		if want := data[b*bs : min((b+1)*bs, int64(len(data)))]; !bytes.Equal(got, want) {
			t.Fatalf("block %d differs from what was written", b)
		}
		if &got[0] != &buf[:1][0] {
			t.Fatalf("block %d was not put in the buffer given (%d bytes' capacity)", b, cap(buf))
		}
		whole := true
		for i := range l.Shards() {
			if src.damaged[[2]int{int(b), i}] != intact && i < l.Data {
				whole = false
			}
		}
		if whole && (src.fetches.Load()-fetches != int64(l.Data) || auth.calls.Load()-opens != 1) {
			t.Errorf("intact block %d: %d fetches and %d opens, want %d and 1",
				b, src.fetches.Load()-fetches, auth.calls.Load()-opens, l.Data)
		}
	}
	allReported()
}

// A data shard whose source failed is not asked for again in the same
// block: the block costs its data shards and one parity shard.
func TestOpenBlockAsksAFailedSourceOnce(t *testing.T) {
	const bs = 1000
	data := randomBytes(rand.New(rand.NewPCG(7, 8)), bs)
	c := encode(t, data, DefaultLayout, bs)
	src := &memSource{c: c, damaged: map[[2]int]damage{{0, 1}: missing}}
	dec, _ := NewDecoder(c.info, src)
	if _, err := dec.OpenBlock(t.Context(), 0, nil, newAuthenticator(data, bs).open(0)); err != nil {
		t.Fatal(err)
	}
	if got, want := src.fetches.Load(), int64(DefaultLayout.Data+1); got != want {
		t.Fatalf("%d fetches, want %d", got, want)
	}
}

// A block that open refuses even when every shard matches its checksum (a
// wrong key, a manifest for other bytes) is that error, as open gave it;
// too many bad shards are a *BlockError; a block outside the file is
// ErrRange.
func TestOpenBlockErrors(t *testing.T) {
	const bs = 1000
	data := randomBytes(rand.New(rand.NewPCG(9, 10)), 2*bs)
	c := encode(t, data, DefaultLayout, bs)
	dec, _ := NewDecoder(c.info, &memSource{c: c})
	if _, err := dec.OpenBlock(t.Context(), 0, nil, newAuthenticator(data, bs).open(1)); !errors.Is(err, errForged) {
		t.Errorf("wrong authenticator: got %v, want %v", err, errForged)
	}
	for _, b := range []int64{-1, 2} {
		if _, err := dec.OpenBlock(t.Context(), b, nil, newAuthenticator(data, bs).open(0)); !errors.Is(err, ErrRange) {
			t.Errorf("block %d: got %v, want ErrRange", b, err)
		}
	}
	src := &memSource{c: c, damaged: map[[2]int]damage{{1, 0}: flipped, {1, 2}: missing, {1, 5}: truncated}}
	dec, _ = NewDecoder(c.info, src)
	var be *BlockError
	if _, err := dec.OpenBlock(t.Context(), 1, nil, newAuthenticator(data, bs).open(1)); !errors.As(err, &be) || be.Good != 3 || len(be.Bad) != 3 {
		t.Errorf("three bad shards of six: got %v, want a *BlockError with 3 good and 3 bad", err)
	}
}
