package files

import (
	"context"
	"encoding/json"
	"fmt"
	"io"
	"sync"

	clientv3 "go.etcd.io/etcd/client/v3"

	"github.com/hivemind/taskworker/internal/erasure"
	"github.com/hivemind/taskworker/internal/keyring"
	"github.com/hivemind/taskworker/internal/serving"
)

// Every write (a file's first version, or a revision) gets a data key of
// its own, and every block it stores is sealed under that key
// (keyring.Sealer: AES-256-GCM, the block's index as nonce) before it is
// erasure coded; a file kept inline is sealed as block 0. The manifest
// keeps the data key wrapped by the pool's master key (manifest.Key), bound
// to the file and the write: workers hold ciphertext shards, etcd holds
// ciphertext inline files and wrapped keys. A write never seals a block
// index twice, repair rebuilds shards of ciphertext without sealing again,
// and a revision is a new write with a new key: no nonce repeats under a
// key (see keyring's caveats).
//
// The manifest's Size, BlockSize and SHA-256 are the plaintext's, as users
// see them; the erasure layer codes the sealed stream, whose blocks are
// keyring.Overhead bytes longer (fileInfo), and the shard checksums are of
// ciphertext, so that repair and the workers' scrubs check what is stored
// without any key.

// keyContext is what a write's data key is bound to: a wrapped key copied
// onto another file's or write's manifest does not open there.
func keyContext(fileID, writeID string) string {
	return "file " + fileID + " write " + writeID
}

// newSealer gives m's write a new data key, wrapped into m.Key, and
// returns its sealer.
func (s *Service) newSealer(m *manifest) (*keyring.Sealer, error) {
	d := keyring.NewDataKey()
	wrapped, err := s.cfg.Keyring.Wrap(d, keyContext(m.FileID, m.WriteID))
	if err != nil {
		return nil, fmt.Errorf("wrapping the data key of file %s: %w", m.FileID, err)
	}
	m.Key = wrapped
	return d.Sealer()
}

// sealer returns the sealer of m's data key, or nil for a version written
// before blocks were sealed (stored as plaintext).
func (s *Service) sealer(m *manifest) (*keyring.Sealer, error) {
	if !m.sealed() {
		return nil, nil
	}
	d, err := s.cfg.Keyring.Unwrap(m.Key, keyContext(m.FileID, m.WriteID))
	if err != nil {
		return nil, err
	}
	return d.Sealer()
}

// sealedSize is the size of the sealed stream of a size-byte file in
// blockSize blocks.
func sealedSize(size int64, blockSize int) int64 {
	blocks := (size + int64(blockSize) - 1) / int64(blockSize)
	return size + blocks*keyring.Overhead
}

// sealedReader reads a sealed file version: it fetches each block's
// ciphertext through the erasure Decoder and opens it.
//
// A read is not hashed again: every block is authenticated as it is opened
// (AES-GCM under the version's own data key, the block's index in its
// nonce) and the manifest fixes how many blocks there are and how long the
// last is, so a read that succeeds returned exactly the bytes written. Nor
// are a block's shards checked against their BLAKE3 sums unless the block
// fails to open (erasure.Decoder.OpenBlock). The
// SHA-256 the manifest records was computed at the write, for the user to
// compare; checking it again on every read cost a SHA-256 pass over the
// whole file (RATIONALE.md, "Why is a sealed file's SHA-256 not checked on
// each read?").
type sealedReader struct {
	d         *erasure.Decoder
	sealer    *keyring.Sealer
	size      int64
	blockSize int
}

// Copy writes the whole file to w.
func (r *sealedReader) Copy(ctx context.Context, w io.Writer) (int64, error) {
	return r.copyRange(ctx, w, 0, r.size)
}

func (r *sealedReader) CopyRange(ctx context.Context, w io.Writer, off, length int64) (int64, error) {
	if off < 0 || length < 0 || off > r.size || length > r.size-off {
		return 0, fmt.Errorf("%w: %d bytes at offset %d of a %d-byte file", erasure.ErrRange, length, off, r.size)
	}
	return r.copyRange(ctx, w, off, length)
}

// sealedFetches bounds the blocks a read fetches at once: the shards of
// the next blocks are on their way while one is opened and written.
const sealedFetches = 3

// copyRange reads the blocks that hold [off, off+length), each whole (a
// block is authenticated as a whole), and writes the part asked for.
func (r *sealedReader) copyRange(ctx context.Context, w io.Writer, off, length int64) (int64, error) {
	if length == 0 {
		return 0, nil
	}
	bs := int64(r.blockSize)
	end := off + length
	first, last := off/bs, (end-1)/bs
	blockLen := func(b int64) int64 { return min(bs, r.size-b*bs) }
	bufLen := r.d.BufferLen(first) // the longest block of the range: its data shards are read in place

	// Up to sealedFetches blocks are fetched and opened at once, each on
	// its own goroutine (the Decoder allows it), and written in order.
	type sealedBlock struct {
		b     int64
		buf   []byte
		plain []byte
		err   error
		done  chan struct{}
	}
	ctx, cancel := context.WithCancel(ctx)
	blocks := make(chan *sealedBlock, sealedFetches-1)
	free := make(chan []byte, sealedFetches+1)
	var fetching sync.WaitGroup
	go func() {
		defer close(blocks)
		for b := first; b <= last; b++ {
			blk := &sealedBlock{b: b, done: make(chan struct{})}
			select {
			case blocks <- blk:
			case <-ctx.Done():
				return
			}
			select {
			case blk.buf = <-free:
			default:
				blk.buf = make([]byte, 0, bufLen)
			}
			fetching.Go(func() {
				defer close(blk.done)
				blk.plain, blk.err = r.d.OpenBlock(ctx, blk.b, blk.buf, func(sealed []byte) ([]byte, error) {
					return r.sealer.Open(sealed[:0], uint64(blk.b), sealed) // in place
				})
			})
		}
	}()
	defer func() {
		cancel()
		for range blocks {
		}
		fetching.Wait() // the fetches are done before the Decoder is left
	}()
	var (
		written int64
		next    = first
	)
	for blk := range blocks {
		select {
		case <-blk.done:
		case <-ctx.Done():
			return written, context.Cause(ctx)
		}
		if blk.err != nil {
			return written, blk.err
		}
		start := blk.b * bs
		lo, hi := max(off, start)-start, min(end, start+blockLen(blk.b))-start
		n, err := w.Write(blk.plain[lo:hi])
		written += int64(n)
		if err != nil {
			return written, err
		}
		select {
		case free <- blk.buf:
		default:
		}
		next = blk.b + 1
	}
	if next <= last {
		return written, context.Cause(ctx)
	}
	return written, nil
}

// RewrapKeys wraps every file version's data key under the keyring's
// current master key (after keyring.Rotate), so that older master keys can
// be retired. Only manifests change, each by compare-and-swap: no shard is
// read or written. It returns how many keys it rewrapped; a version
// deleted meanwhile is skipped, and a manifest changed meanwhile (repair)
// is read again.
func (s *Service) RewrapKeys(ctx context.Context) (int, error) {
	var keys []string
	err := s.eachManifest(ctx, false, func(key string, _ int64, m *manifest) error {
		if by, err := keyring.WrappedBy(m.Key); err == nil && by != s.cfg.Keyring.Current() {
			keys = append(keys, key)
		}
		return nil
	})
	if err != nil {
		return 0, serving.EtcdError(err)
	}
	n := 0
	for _, key := range keys {
		changed, err := s.rewrap(ctx, key)
		if err != nil {
			return n, err
		}
		if changed {
			n++
		}
	}
	return n, nil
}

// rewrap rewraps the data key of the manifest under key, changing no other
// field, even those this version of the code does not know.
func (s *Service) rewrap(ctx context.Context, key string) (bool, error) {
	for attempt := 0; attempt < 10; attempt++ {
		resp, err := s.cli.Get(ctx, key)
		if err != nil {
			return false, serving.EtcdError(err)
		}
		if len(resp.Kvs) == 0 {
			return false, nil // deleted meanwhile
		}
		kv := resp.Kvs[0]
		m, err := unmarshalManifest(kv.Value)
		if err != nil || !m.sealed() {
			return false, nil
		}
		wrapped, changed, err := s.cfg.Keyring.Rewrap(m.Key, keyContext(m.FileID, m.WriteID))
		if err != nil {
			return false, fmt.Errorf("rewrapping the data key of file %s version %d: %w", m.FileID, m.Version, err)
		}
		if !changed {
			return false, nil
		}
		var fields map[string]json.RawMessage
		if err := json.Unmarshal(kv.Value, &fields); err != nil {
			return false, fmt.Errorf("manifest %s: %w", key, err)
		}
		fields["key"], _ = json.Marshal(wrapped)
		val, err := json.Marshal(fields)
		if err != nil {
			return false, err
		}
		txn, err := s.cli.Txn(ctx).If(clientv3.Compare(clientv3.ModRevision(key), "=", kv.ModRevision)).
			Then(clientv3.OpPut(key, string(val))).Commit()
		if err != nil {
			return false, serving.EtcdError(err)
		}
		if txn.Succeeded {
			return true, nil
		}
	}
	return false, fmt.Errorf("manifest %s: %w", key, errConflict)
}
