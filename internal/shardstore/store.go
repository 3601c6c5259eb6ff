package shardstore

import (
	"context"
	"crypto/rand"
	"encoding/hex"
	"errors"
	"fmt"
	"hash/crc32"
	"io"
	"io/fs"
	"log/slog"
	"os"
	"path/filepath"
	"strings"
	"sync"
	"time"
)

var (
	// ErrNotFound: no shard under that key.
	ErrNotFound = errors.New("shardstore: shard not found")
	// ErrCorrupt: a shard file failed verification; errors.As gives a *CorruptError.
	ErrCorrupt = errors.New("shardstore: shard is corrupt")
	// ErrTooLarge: a Put's payload exceeded Config.MaxShardSize.
	ErrTooLarge = errors.New("shardstore: shard larger than MaxShardSize")
	// ErrLocked: another process has the store open.
	ErrLocked = errors.New("shardstore: store is in use by another process")
	// ErrClosed: the Store was closed.
	ErrClosed = errors.New("shardstore: store is closed")
)

// CorruptError says which shard failed verification and how. Its payload must not be used; the shard
// should be rebuilt from the others and written again with Put.
type CorruptError struct {
	Key    Key
	Path   string
	Reason string
}

func (e *CorruptError) Error() string {
	return fmt.Sprintf("shardstore: shard %s (%s) is corrupt: %s", e.Key, e.Path, e.Reason)
}

// Unwrap makes errors.Is(err, ErrCorrupt) hold.
func (e *CorruptError) Unwrap() error { return ErrCorrupt }

// Info describes a stored shard.
type Info struct {
	Key      Key
	Size     int64  // payload bytes
	Checksum uint32 // CRC32C of the payload, as recorded in the footer
	ModTime  time.Time
}

// Store keeps shards as files under one directory. Its methods are safe for concurrent use.
type Store struct {
	cfg    Config
	root   string // cfg.Dir/shards
	lock   *os.File
	logger *slog.Logger

	life  context.Context // canceled by Close, to stop a scrub pass
	close context.CancelFunc

	// group, where the platform allows, replaces per-shard fsyncs with a
	// shared flush of the filesystem (groupsync.go); rootDir is its handle.
	group   *groupSync
	rootDir *os.File

	mu     sync.Mutex
	closed bool
	temps  map[string]bool // temp files being written by this process; GC leaves them alone
	ops    sync.WaitGroup
}

// Open opens (creating if needed) the store in cfg.Dir, takes its lock, and removes temp files left by a
// crash: with the lock held, no other writer can own them.
func Open(cfg Config) (*Store, error) {
	if err := cfg.Validate(); err != nil {
		return nil, err
	}
	dir, err := filepath.Abs(cfg.Dir)
	if err != nil {
		return nil, fmt.Errorf("shardstore: %w", err)
	}
	cfg.Dir = dir
	// Shards are owner-only whatever the umask: directories 0700, files
	// 0600. A store made before that had 0755; its root is tightened here,
	// which closes every path into it.
	if err := os.MkdirAll(filepath.Join(dir, shardsDir), 0o700); err != nil {
		return nil, fmt.Errorf("shardstore: creating the store: %w", err)
	}
	if err := os.Chmod(filepath.Join(dir, shardsDir), 0o700); err != nil {
		return nil, fmt.Errorf("shardstore: making the store owner-only: %w", err)
	}
	lock, err := lockDir(dir)
	if err != nil {
		return nil, err
	}
	logger := cfg.Logger
	if logger == nil {
		logger = slog.New(slog.DiscardHandler)
	}
	s := &Store{cfg: cfg, root: filepath.Join(dir, shardsDir), lock: lock, logger: logger, temps: map[string]bool{}}
	s.life, s.close = context.WithCancel(context.Background())
	if s.group, s.rootDir, err = openGroupSync(s.root); err != nil {
		s.Close()
		return nil, fmt.Errorf("shardstore: %w", err)
	}
	st, err := s.GC(context.Background(), nil, 0)
	if err != nil {
		s.Close()
		return nil, err
	}
	if st.TempFiles > 0 {
		logger.Info("shardstore: removed temp files left by an interrupted write",
			"dir", dir, "files", st.TempFiles, "bytes", st.TempBytes)
	}
	return s, nil
}

// Close waits for the operations in progress (a scrub pass stops at its next shard), then releases the
// lock. The Store cannot be used afterwards.
func (s *Store) Close() error {
	s.mu.Lock()
	if s.closed {
		s.mu.Unlock()
		return nil
	}
	s.closed = true
	s.mu.Unlock()
	s.close()
	s.ops.Wait()
	if s.rootDir != nil {
		s.rootDir.Close()
	}
	return unlockDir(s.lock)
}

// begin registers an operation, so Close waits for it.
func (s *Store) begin() error {
	s.mu.Lock()
	defer s.mu.Unlock()
	if s.closed {
		return ErrClosed
	}
	s.ops.Add(1)
	return nil
}

func (s *Store) isClosed() bool {
	s.mu.Lock()
	defer s.mu.Unlock()
	return s.closed
}

func (s *Store) path(k Key) string { return filepath.Join(s.root, k.dir(), k.fileName()) }

// Put stores the shard read from r under k, replacing any shard there, and returns once it is durable:
// the bytes go to a temp file in the shard's directory, which is fsynced, renamed over the shard's name,
// and the directory fsynced. Readers see the old shard or the new one, never a mix; a crash leaves the old
// shard or the new one plus, perhaps, a temp file that GC (and Open) removes.
func (s *Store) Put(ctx context.Context, k Key, r io.Reader) (Info, error) {
	if err := k.Validate(); err != nil {
		return Info{}, err
	}
	if err := s.begin(); err != nil {
		return Info{}, err
	}
	defer s.ops.Done()

	dir := filepath.Join(s.root, k.dir())
	f, tmp, err := s.createTemp(dir)
	if err != nil {
		return Info{}, err
	}
	defer s.forgetTemp(tmp)
	info, err := s.writeShard(ctx, f, k, r)
	if cerr := f.Close(); err == nil && cerr != nil {
		err = fmt.Errorf("shardstore: put %s: %w", k, cerr)
	}
	if err == nil {
		if err = os.Rename(tmp, s.path(k)); err == nil {
			err = s.syncDir(dir)
		}
		if err != nil {
			err = fmt.Errorf("shardstore: put %s: %w", k, err)
		}
	}
	if err != nil {
		os.Remove(tmp)
		return Info{}, err
	}
	return info, nil
}

// createTemp creates a new temp file in dir, creating dir if needed, and registers it so that GC leaves it
// alone. A concurrent GC may remove the (empty) directory between the two steps; then it tries again.
func (s *Store) createTemp(dir string) (*os.File, string, error) {
	for attempt := 0; ; attempt++ {
		err := s.mkdirs(dir)
		if err == nil {
			var rnd [12]byte
			rand.Read(rnd[:])
			tmp := filepath.Join(dir, tempPrefix+hex.EncodeToString(rnd[:]))
			s.mu.Lock()
			s.temps[tmp] = true
			s.mu.Unlock()
			var f *os.File
			if f, err = os.OpenFile(tmp, os.O_WRONLY|os.O_CREATE|os.O_EXCL, 0o600); err == nil {
				return f, tmp, nil
			}
			s.forgetTemp(tmp)
		}
		if !errors.Is(err, fs.ErrNotExist) || attempt == 2 {
			return nil, "", fmt.Errorf("shardstore: creating a temp file in %s: %w", dir, err)
		}
	}
}

func (s *Store) forgetTemp(tmp string) {
	s.mu.Lock()
	delete(s.temps, tmp)
	s.mu.Unlock()
}

// mkdirs creates dir and any missing parents under the store root, fsyncing each parent that gained an
// entry, so that a durable shard is never in a directory that a crash forgets.
func (s *Store) mkdirs(dir string) error {
	if st, err := os.Stat(dir); err == nil && st.IsDir() {
		return nil
	}
	if err := s.ensureRoot(); err != nil {
		return err
	}
	rel, err := filepath.Rel(s.root, dir)
	if err != nil {
		return err
	}
	parent := s.root
	for _, part := range strings.Split(filepath.ToSlash(rel), "/") {
		next := filepath.Join(parent, part)
		err := os.Mkdir(next, 0o700)
		switch {
		case err == nil:
			if s.group != nil {
				break // the flush at the end of Put covers it
			}
			if err := syncDir(parent); err != nil {
				return fmt.Errorf("shardstore: %w", err)
			}
		case !errors.Is(err, fs.ErrExist):
			return fmt.Errorf("shardstore: creating %s: %w", next, err)
		}
		parent = next
	}
	return nil
}

// copyBuffers holds the 1 MiB buffers Put copies through, for a reader
// that cannot write its bytes out itself (io.WriterTo).
var copyBuffers = sync.Pool{New: func() any { b := make([]byte, 1<<20); return &b }}

// payloadWriter checks, checksums and writes a shard's payload as it comes.
type payloadWriter struct {
	ctx  context.Context
	f    *os.File
	max  int64
	size int64
	crc  uint32
}

func (w *payloadWriter) Write(p []byte) (int, error) {
	if err := w.ctx.Err(); err != nil {
		return 0, err
	}
	if w.size+int64(len(p)) > w.max {
		return 0, fmt.Errorf("%w (%d bytes)", ErrTooLarge, w.max)
	}
	w.crc = crc32.Update(w.crc, castagnoli, p)
	n, err := w.f.Write(p)
	w.size += int64(n)
	return n, err
}

// writeShard writes header, payload and footer to f, and fsyncs it unless a
// group flush will. A reader that implements io.WriterTo (the shard
// server's stream of messages) hands its buffers over as they are, with no
// copy through Put's own (RATIONALE.md, "Why do shard bytes cross the pool
// without copies?").
func (s *Store) writeShard(ctx context.Context, f *os.File, k Key, r io.Reader) (Info, error) {
	fail := func(err error) (Info, error) { return Info{}, fmt.Errorf("shardstore: put %s: %w", k, err) }
	if _, err := f.Write(encodeHeader(k)); err != nil {
		return fail(err)
	}
	if err := ctx.Err(); err != nil {
		return fail(err)
	}
	w := &payloadWriter{ctx: ctx, f: f, max: s.cfg.MaxShardSize}
	bufp := copyBuffers.Get().(*[]byte)
	_, err := io.CopyBuffer(w, r, *bufp)
	copyBuffers.Put(bufp)
	if err != nil {
		return fail(err)
	}
	if _, err := f.Write(encodeFooter(w.size, w.crc)); err != nil {
		return fail(err)
	}
	if s.group == nil {
		if err := f.Sync(); err != nil {
			return fail(err)
		}
	}
	st, err := f.Stat()
	if err != nil {
		return fail(err)
	}
	return Info{Key: k, Size: w.size, Checksum: w.crc, ModTime: st.ModTime()}, nil
}

// syncDir makes a directory's entries durable: with a shared flush where
// there is one (which also covers the shard's bytes), else by fsync.
func (s *Store) syncDir(dir string) error {
	if s.group != nil {
		return s.group.wait()
	}
	return syncDir(dir)
}

func syncDir(dir string) error {
	d, err := os.Open(dir)
	if err != nil {
		return err
	}
	err = d.Sync()
	if cerr := d.Close(); err == nil {
		err = cerr
	}
	return err
}

// Get returns the payload of shard k after verifying it: ErrNotFound if there is none, a *CorruptError
// (ErrCorrupt) if the file fails any check.
func (s *Store) Get(ctx context.Context, k Key) ([]byte, Info, error) {
	info, payload, err := s.read(ctx, k, readPayload)
	if err != nil {
		return nil, Info{}, err
	}
	return payload, info, nil
}

// Verify reads shard k through and checks it as Get does, without keeping the payload.
func (s *Store) Verify(ctx context.Context, k Key) (Info, error) {
	info, _, err := s.read(ctx, k, readVerify)
	return info, err
}

// Stat returns shard k's Info from its header and footer, without reading the payload: a cheap check of
// the framing, not of the bytes (Verify is that).
func (s *Store) Stat(ctx context.Context, k Key) (Info, error) {
	info, _, err := s.read(ctx, k, readFraming)
	return info, err
}

// readMode says how much of a shard file read checks and returns.
type readMode int

const (
	readFraming readMode = iota // header and footer only
	readVerify                  // and the payload's checksum
	readPayload                 // and return the payload
)

// read opens shard k and reads it as mode says.
func (s *Store) read(ctx context.Context, k Key, mode readMode) (Info, []byte, error) {
	if err := k.Validate(); err != nil {
		return Info{}, nil, err
	}
	if err := s.begin(); err != nil {
		return Info{}, nil, err
	}
	defer s.ops.Done()
	p := s.path(k)
	f, err := os.Open(p)
	if errors.Is(err, fs.ErrNotExist) {
		return Info{}, nil, fmt.Errorf("%w: %s", ErrNotFound, k)
	}
	if err != nil {
		return Info{}, nil, fmt.Errorf("shardstore: get %s: %w", k, err)
	}
	defer f.Close()
	return readShard(ctx, f, p, k, mode, nil)
}

// readShard checks the shard file f, which should hold shard k, as mode says, reading the payload no faster
// than pace allows (if not nil). Any framing or checksum failure is a *CorruptError; I/O errors are
// returned as they are.
func readShard(ctx context.Context, f *os.File, path string, k Key, mode readMode, pace *pacer) (Info, []byte, error) {
	corrupt := func(format string, args ...any) (Info, []byte, error) {
		return Info{}, nil, &CorruptError{Key: k, Path: path, Reason: fmt.Sprintf(format, args...)}
	}
	st, err := f.Stat()
	if err != nil {
		return Info{}, nil, err
	}
	size := st.Size()
	if size < int64(headerLen(k)+footerLen) {
		return corrupt("%d bytes, shorter than its header and footer", size)
	}
	head := make([]byte, min(size, maxHeaderLen))
	if _, err := f.ReadAt(head, 0); err != nil {
		return Info{}, nil, err
	}
	got, hl, err := decodeHeader(head)
	if err != nil {
		return corrupt("%v", err)
	}
	if got != k {
		return corrupt("the header names shard %s", got)
	}
	foot := make([]byte, footerLen)
	if _, err := f.ReadAt(foot, size-footerLen); err != nil {
		return Info{}, nil, err
	}
	n, want, err := decodeFooter(foot)
	if err != nil {
		return corrupt("%v", err)
	}
	if n != size-int64(hl)-footerLen {
		return corrupt("the footer records %d payload bytes, the file holds %d", n, size-int64(hl)-footerLen)
	}
	info := Info{Key: k, Size: n, Checksum: want, ModTime: st.ModTime()}
	if mode == readFraming {
		return info, nil, nil
	}

	var payload, buf []byte
	if mode == readPayload {
		payload = make([]byte, n)
	} else {
		bufp := copyBuffers.Get().(*[]byte)
		defer copyBuffers.Put(bufp)
		buf = *bufp
	}
	chunk := int64(4 << 20)
	if pace != nil {
		chunk = int64(pace.chunk())
	}
	var crc uint32
	for off := int64(0); off < n; {
		if err := ctx.Err(); err != nil {
			return Info{}, nil, err
		}
		var p []byte
		if payload != nil {
			p = payload[off:min(off+chunk, n)]
		} else {
			p = buf[:min(int64(len(buf)), chunk, n-off)]
		}
		if _, err := f.ReadAt(p, int64(hl)+off); err != nil {
			return Info{}, nil, err
		}
		crc = crc32.Update(crc, castagnoli, p)
		off += int64(len(p))
		if pace != nil {
			if err := pace.wait(ctx, len(p)); err != nil {
				return Info{}, nil, err
			}
		}
	}
	if crc != want {
		return corrupt("payload checksum %08x, recorded %08x", crc, want)
	}
	return info, payload, nil
}

// Delete removes shard k. Deleting a shard that is not there is not an error. The directory is not
// fsynced: a deletion a crash forgets is garbage that GC removes again.
func (s *Store) Delete(ctx context.Context, k Key) error {
	if err := k.Validate(); err != nil {
		return err
	}
	if err := s.begin(); err != nil {
		return err
	}
	defer s.ops.Done()
	if err := os.Remove(s.path(k)); err != nil && !errors.Is(err, fs.ErrNotExist) {
		return fmt.Errorf("shardstore: delete %s: %w", k, err)
	}
	return nil
}
