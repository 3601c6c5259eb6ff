package files

import (
	"bytes"
	"context"
	"crypto/sha256"
	"encoding/base64"
	"encoding/hex"
	"encoding/json"
	"errors"
	"fmt"
	"hash"
	"io"
	"slices"
	"sync"
	"time"

	clientv3 "go.etcd.io/etcd/client/v3"
	"google.golang.org/grpc/codes"
	"google.golang.org/grpc/status"

	v1 "github.com/hivemind/taskworker/api/taskworker/v1"
	"github.com/hivemind/taskworker/internal/erasure"
	"github.com/hivemind/taskworker/internal/keyring"
	"github.com/hivemind/taskworker/internal/placement"
	"github.com/hivemind/taskworker/internal/quota"
	"github.com/hivemind/taskworker/internal/serving"
)

// writeRequest is one Push, Revise or Upload.
type writeRequest struct {
	user, filename string
	fileID         string // set for a revision
	expected       int64  // for a revision: refuse unless the current version is this
	size           int64  // the size the sender declared; 0: unknown
	keep           int64  // the file's retention, if the sender sets it
	what           string // "this push", for messages
	limits         quota.Limits
}

func (w writeRequest) revise() bool { return w.fileID != "" }

// keepOr is the file's retention: the request's, else the file's own.
func (w writeRequest) keepOr(current int64) int64 {
	if w.keep > 0 {
		return w.keep
	}
	return current
}

func (s *Service) Push(ctx context.Context, req *v1.PushRequest) (*v1.PushResponse, error) {
	user, err := s.userFrom(ctx, req.UserId)
	if err != nil {
		return nil, definite(err)
	}
	info, err := s.write(ctx, writeRequest{user: user, filename: req.Filename, size: int64(len(req.FileData)), keep: req.KeepVersions, what: "this push"}, bytes.NewReader(req.FileData))
	if err != nil {
		return nil, definite(err)
	}
	return &v1.PushResponse{FileId: info.FileId, Version: info.Version, Info: info}, nil
}

func (s *Service) Revise(ctx context.Context, req *v1.ReviseRequest) (*v1.ReviseResponse, error) {
	user, err := s.userFrom(ctx, req.UserId)
	if err != nil {
		return nil, definite(err)
	}
	if err := checkFileID(req.FileId); err != nil {
		return nil, definite(err)
	}
	info, err := s.write(ctx, writeRequest{user: user, fileID: req.FileId, expected: req.ExpectedVersion, size: int64(len(req.FileData)), what: "this revision"}, bytes.NewReader(req.FileData))
	if err != nil {
		return nil, definite(err)
	}
	return &v1.ReviseResponse{FileId: info.FileId, Version: info.Version, Info: info}, nil
}

func (s *Service) Upload(stream v1.FileService_UploadServer) error {
	info, err := s.upload(stream)
	if err != nil {
		return definite(err)
	}
	// Committed: a failure to answer now is the caller's ambiguity.
	return stream.SendAndClose(&v1.UploadResponse{Info: info})
}

func (s *Service) upload(stream v1.FileService_UploadServer) (*v1.FileInfo, error) {
	first, err := stream.Recv()
	if err != nil {
		return nil, status.Convert(err).Err()
	}
	h := first.GetHeader()
	if h == nil {
		return nil, status.Error(codes.InvalidArgument, "the first Upload message must be the header (filename, and file_id to revise)")
	}
	user, err := s.userFrom(stream.Context(), h.UserId)
	if err != nil {
		return nil, err
	}
	if h.FileId != "" {
		if err := checkFileID(h.FileId); err != nil {
			return nil, err
		}
	}
	if h.Size < 0 {
		return nil, status.Errorf(codes.InvalidArgument, "the header declares a size of %d bytes; send the file's size, or 0 if unknown", h.Size)
	}
	return s.write(stream.Context(), writeRequest{user: user, filename: h.Filename, fileID: h.FileId, expected: h.ExpectedVersion, size: h.Size, keep: h.KeepVersions, what: "this upload"},
		&uploadReader{stream: stream})
}

// ambiguousError is the failure of a commit etcd may have applied: the
// transaction was sent and no answer came back. It is the one failure of a
// write not marked NotCommitted (see definite).
type ambiguousError struct{ err error }

func (e *ambiguousError) Error() string { return e.err.Error() }
func (e *ambiguousError) Unwrap() error { return e.err }

// definite returns a write's failure as its caller sees it: marked
// serving.NotCommitted, since the write did not take effect, unless its
// commit was sent and its outcome is unknown.
func definite(err error) error {
	if a, ok := errors.AsType[*ambiguousError](err); ok {
		return a.err
	}
	return serving.NotCommitted(err)
}

// declaredReader holds a stream to the size its sender declared: a byte
// past it, or an end short of it, is the sender's error.
type declaredReader struct {
	r    io.Reader
	size int64
	read int64
}

func (d *declaredReader) Read(p []byte) (int, error) {
	n, err := d.r.Read(p)
	d.read += int64(n)
	switch {
	case d.read > d.size:
		return 0, status.Errorf(codes.InvalidArgument, "the upload sent more than the %d bytes its header declares; declare the file's size, or 0 if unknown", d.size)
	case errors.Is(err, io.EOF) && d.read < d.size:
		return n, status.Errorf(codes.InvalidArgument, "the upload ended after %d of the %d bytes its header declares; declare the file's size, or 0 if unknown", d.read, d.size)
	}
	return n, err
}

// uploadReader reads an Upload's data messages as one stream.
type uploadReader struct {
	stream v1.FileService_UploadServer
	buf    []byte
}

func (r *uploadReader) Read(p []byte) (int, error) {
	for len(r.buf) == 0 {
		msg, err := r.stream.Recv()
		if err != nil {
			return 0, err // io.EOF at the end
		}
		if msg.GetHeader() != nil {
			return 0, status.Error(codes.InvalidArgument, "a second Upload header")
		}
		r.buf = msg.GetData()
	}
	n := copy(p, r.buf)
	r.buf = r.buf[n:]
	return n, nil
}

// write stores a new file or version: every block's shards on workers
// first, then the manifest in one etcd transaction. Until that commits the
// write is invisible; if it fails, its shards are garbage for the collector.
func (s *Service) write(ctx context.Context, req writeRequest, r io.Reader) (*v1.FileInfo, error) {
	if err := checkFilename(req.filename); err != nil {
		return nil, err
	}
	if req.keep < 0 {
		return nil, status.Errorf(codes.InvalidArgument, "keep_versions %d is negative; send how many versions to keep, or 0 for the default", req.keep)
	}
	var cur fileRecord
	if req.revise() {
		// Fail fast on a revision that cannot commit; commit checks again.
		var err error
		if cur, _, err = s.current(ctx, req.user, req.fileID, req.expected); err != nil {
			return nil, err
		}
	}
	// A declared size over the limit is refused before any byte is read.
	if limit := s.maxFileBytes(); req.size > limit {
		return nil, tooLarge(fmt.Sprintf("%d bytes", req.size), limit)
	}
	var err error
	if req.limits, err = s.limits(ctx, req.user); err != nil {
		return nil, err
	}
	if r, err = s.checkQuota(ctx, req, cur, r); err != nil {
		return nil, err
	}
	now := time.Now().UnixMilli()
	m := &manifest{
		fileRecord: fileRecord{FileID: req.fileID, Filename: req.filename, Version: 1,
			BlockSize: s.cfg.BlockSize, CreatedMs: now, ModifiedMs: now},
		Owner:   req.user,
		WriteID: newID(),
	}
	if m.FileID == "" {
		m.FileID = newID()
	}
	if req.size > 0 {
		r = &declaredReader{r: r, size: req.size}
	}
	sealer, err := s.newSealer(m)
	if err != nil {
		return nil, status.Errorf(codes.Internal, "%v", err)
	}
	// A file that fits InlineMax lives in its manifest: see inlineLayout.
	head := make([]byte, s.cfg.InlineMax+1)
	n, err := io.ReadFull(r, head)
	switch {
	case errors.Is(err, io.EOF) || errors.Is(err, io.ErrUnexpectedEOF):
		m.Layout, m.Size = inlineLayout, int64(n)
		m.SHA256 = fmt.Sprintf("%x", sha256.Sum256(head[:n]))
		m.Inline = base64.StdEncoding.EncodeToString(sealer.Seal(nil, 0, head[:n]))
	case err != nil:
		if _, ok := status.FromError(err); ok {
			return nil, err
		}
		return nil, status.Errorf(codes.Aborted, "reading the file: %v", err)
	default:
		workers := s.placeable(s.workers.StorageWorkers(), nil)
		if len(workers) == 0 {
			if len(s.workers.StorageWorkers()) > 0 {
				return nil, status.Error(codes.ResourceExhausted, "every worker that stores files has a full disk; free space on them or add workers")
			}
			return nil, status.Error(codes.Unavailable, "no live worker stores files; start workers with a data directory")
		}
		// The intent record marks the write as this network's, so that
		// the collector may delete its shards if it fails (see collect).
		if _, err := s.cli.Put(ctx, s.keys.write(m.FileID, m.WriteID), fmt.Sprint(now)); err != nil {
			return nil, serving.EtcdError(err)
		}
		defer s.tendIntent(ctx, m)()
		layout, err := erasure.LayoutFor(len(workers))
		if err != nil {
			return nil, status.Errorf(codes.Internal, "choosing a layout for %d workers: %v", len(workers), err)
		}
		m.Layout = layout.String()
		if err := s.storeBlocks(ctx, m, layout, workers, sealer, io.MultiReader(bytes.NewReader(head), r)); err != nil {
			s.dropWrite(m)
			return nil, err
		}
		m.splitIntoSegments(s.segmentBlocks(layout))
		if err := s.putSegments(ctx, m); err != nil {
			s.dropWrite(m)
			s.dropSegments(m)
			return nil, serving.EtcdError(err)
		}
	}
	if err := s.commit(ctx, req, m); err != nil {
		if _, ok := errors.AsType[*ambiguousError](err); !ok {
			// Not committed: the shards and segments are garbage. (Had
			// the commit been applied, they would be the file's: the
			// collector decides once the manifests say.)
			s.dropWrite(m)
			s.dropSegments(m)
		}
		return nil, err
	}
	s.log.Debug("file written", "file", m.FileID, "version", m.Version, "size", m.Size, "layout", m.Layout)
	return m.proto(), nil
}

// tendIntent keeps the write's intent fresh until the returned function is
// called: the collector takes the shards of a write only once its intent
// has gone GCMinAge untouched, so a write that runs for hours, or waits on
// a slow sender, keeps its shards; a write whose pool died stops tending
// it. It only refreshes an intent that is there: one the collector
// removed stays removed, and the write's commit fails.
func (s *Service) tendIntent(ctx context.Context, m *manifest) (stop func()) {
	key := s.keys.write(m.FileID, m.WriteID)
	ctx, cancel := context.WithCancel(ctx)
	done := make(chan struct{})
	go func() {
		defer close(done)
		t := time.NewTicker(max(s.cfg.GCMinAge/4, 100*time.Millisecond))
		defer t.Stop()
		for {
			select {
			case <-ctx.Done():
				return
			case <-t.C:
			}
			_, err := s.cli.Txn(ctx).If(clientv3.Compare(clientv3.CreateRevision(key), ">", 0)).
				Then(clientv3.OpPut(key, fmt.Sprint(time.Now().UnixMilli()))).Commit()
			if err != nil && ctx.Err() == nil {
				s.log.Warn("refreshing a write's intent", "file", m.FileID, "write", m.WriteID, "err", err)
			}
		}
	}()
	return func() { cancel(); <-done }
}

// maxFileBytes is the largest file the service takes.
func (s *Service) maxFileBytes() int64 {
	if s.cfg.MaxFileBytes > 0 {
		return s.cfg.MaxFileBytes
	}
	return MaxFileSize
}

// MaxFileSize bounds Config.MaxFileBytes: half the erasure format's own
// bound, so that a file's sealed stream (keyring.Overhead more a block)
// always fits in it.
const MaxFileSize = erasure.MaxFileSize / 2

// tooLarge is the status of a file larger than the service takes.
func tooLarge(size string, limit int64) error {
	return status.Errorf(codes.ResourceExhausted, "the file (%s) is larger than this network stores in one file (%d bytes); split it", size, limit)
}

// storeBlocks seals r block by block, encodes each sealed block and stores
// its shards, BlocksInFlight blocks at a time, filling in m. Each block is
// read into the buffer its shards are coded in, hashed (the plaintext's
// SHA-256) as it arrives, sealed in place and coded in place; its shards
// go to the workers from that buffer (gRPC encodes them from it), which is
// reused once they are stored: no copy of the bytes between the upload and
// gRPC.
func (s *Service) storeBlocks(ctx context.Context, m *manifest, layout erasure.Layout, workers []placement.Worker, sealer *keyring.Sealer, r io.Reader) error {
	coder, err := erasure.NewCoder(layout, m.BlockSize+keyring.Overhead)
	if err != nil {
		return status.Errorf(codes.Internal, "encoder: %v", err)
	}
	ctx, cancel := context.WithCancelCause(ctx)
	defer cancel(nil)
	var (
		wg      sync.WaitGroup
		mu      sync.Mutex
		slots   = make(chan struct{}, s.cfg.BlocksInFlight)
		free    = make(chan []byte, s.cfg.BlocksInFlight+1) // buffers whose shards are stored
		holders = map[int64][]string{}                      // block -> the workers of its shards
		sums    [][]erasure.Sum
		sha     = sha256.New()
		size    int64
	)
	for b := int64(0); ; b++ {
		var buf []byte
		select {
		case buf = <-free:
		default:
			if b == 0 {
				// The first block's buffer grows with what it reads: a
				// 10 KiB file does not cost a whole block's buffer.
				buf = make([]byte, min(firstBuffer, coder.BufferLen(m.BlockSize+keyring.Overhead)))
			} else {
				buf = make([]byte, coder.BufferLen(m.BlockSize+keyring.Overhead))
			}
		}
		buf, n, err := readHashed(r, buf, m.BlockSize, sha)
		if err != nil {
			cancel(err)
			break
		}
		if n == 0 {
			break
		}
		if need := coder.BufferLen(n + keyring.Overhead); len(buf) < need {
			grown := make([]byte, need)
			copy(grown, buf[:n])
			buf = grown
		}
		size += int64(n)
		if limit := s.maxFileBytes(); size > limit {
			// Refused now, not after the rest of the upload.
			cancel(tooLarge(fmt.Sprintf("over %d bytes", limit), limit))
			break
		}
		sealed := sealer.Seal(buf[:0], uint64(b), buf[:n])
		shards, blockSums, err := coder.Code(buf, len(sealed))
		if err != nil {
			cancel(err)
			break
		}
		sums = append(sums, blockSums)
		select {
		case slots <- struct{}{}:
		case <-ctx.Done():
		}
		if ctx.Err() != nil {
			break
		}
		wg.Go(func() {
			defer func() { <-slots }()
			h, reusable, err := s.putBlock(ctx, m.FileID, m.WriteID, b, shards, layout, workers)
			if err != nil {
				// The write fails: its buffers go with it.
				cancel(err)
				return
			}
			mu.Lock()
			holders[b] = h
			mu.Unlock()
			if !reusable {
				return // a failed stream may still read it (see shardCodec)
			}
			select {
			case free <- buf:
			default:
			}
		})
		if n < m.BlockSize {
			break
		}
	}
	wg.Wait()
	if err := context.Cause(ctx); err != nil {
		if st, ok := errors.AsType[interface {
			error
			GRPCStatus() *status.Status
		}](err); ok {
			return st.GRPCStatus().Err() // the reader's own, unwrapped
		}
		if errors.Is(err, context.Canceled) || errors.Is(err, context.DeadlineExceeded) {
			return status.FromContextError(err).Err()
		}
		return status.Errorf(codes.Aborted, "reading the file: %v", err)
	}
	m.Size = size
	m.SHA256 = hex.EncodeToString(sha.Sum(nil))
	m.Sums = encodeSums(sums)
	m.Placement = make([][]int16, len(sums))
	for b := range m.Placement {
		hs := holders[int64(b)]
		m.Placement[b] = make([]int16, len(hs))
		for i, id := range hs {
			m.setHolder(int64(b), i, id)
		}
	}
	return nil
}

// firstBuffer is the first size of a write's first block buffer, which
// doubles up to a block's as the file's bytes come.
const firstBuffer = 64 << 10

// readHashed reads up to size bytes from r into buf, as io.ReadFull does,
// growing buf (doubling, up to size) when it is full, and writes what it
// reads to h while it is fresh in the cache. It returns the buffer and how
// many bytes it read, fewer than size only at the end of r (and then with
// no error).
func readHashed(r io.Reader, buf []byte, size int, h hash.Hash) ([]byte, int, error) {
	n := 0
	for n < size {
		if n == len(buf) {
			grown := make([]byte, min(max(2*len(buf), firstBuffer), size))
			copy(grown, buf[:n])
			buf = grown
		}
		got, err := r.Read(buf[n:min(len(buf), size)])
		h.Write(buf[n : n+got])
		n += got
		if errors.Is(err, io.EOF) {
			return buf, n, nil
		}
		if err != nil {
			return buf, n, err
		}
	}
	return buf, n, nil
}

// putBlock stores a block's shards on distinct workers, in placement order,
// moving a shard to the next worker in rank when its worker fails. It needs
// every shard durable, or when workers are short at least Data+1 of them
// (the repairer adds the rest); it returns who holds each shard, and
// whether the shards' buffer may be reused: not after a failed send, whose
// stream gRPC may still be reading from (see shardCodec).
func (s *Service) putBlock(ctx context.Context, fileID, writeID string, b int64, shards [][]byte, layout erasure.Layout, workers []placement.Worker) ([]string, bool, error) {
	n := len(shards)
	// The block's own placement first, spread over zones for its n shards;
	// then every other worker in rank, to take a shard whose worker fails.
	order, _ := placement.Place(workers, fileID, b, n)
	all, _ := placement.Place(workers, fileID, b, len(workers))
	for _, id := range all {
		if !slices.Contains(order, id) {
			order = append(order, id)
		}
	}
	holders := make([]string, n)
	var mu sync.Mutex
	next := min(n, len(order))
	take := func() string {
		mu.Lock()
		defer mu.Unlock()
		if next >= len(order) {
			return ""
		}
		next++
		return order[next-1]
	}
	var wg sync.WaitGroup
	var lastErr error
	for i := range n {
		target := ""
		if i < len(order) {
			target = order[i]
		}
		wg.Go(func() {
			for id := target; id != "" && ctx.Err() == nil; id = take() {
				err := s.putShard(ctx, id, &v1.ShardKey{FileId: fileID, WriteId: writeID, Block: b, Shard: int32(i)}, shards[i])
				if err == nil {
					holders[i] = id
					return
				}
				mu.Lock()
				lastErr = err
				mu.Unlock()
				s.log.Warn("storing a shard failed; trying another worker", "worker", id, "file", fileID, "block", b, "shard", i, "err", err)
			}
		})
	}
	wg.Wait()
	if err := ctx.Err(); err != nil {
		return nil, false, err
	}
	stored := 0
	for _, h := range holders {
		if h != "" {
			stored++
		}
	}
	if quorum := min(n, layout.Data+1); stored < quorum {
		return nil, false, status.Errorf(codes.Unavailable, "block %d: only %d of %d shards could be stored (need %d); last error: %v", b, stored, n, quorum, lastErr)
	}
	return holders, lastErr == nil, nil
}

// fullFor is how long a worker that refused a shard for want of space
// (ResourceExhausted) is given no new shards.
const fullFor = 30 * time.Second

// placeable returns the workers that may take new shards: those not known
// to be full and not drained, and those in keep (a block's current holders,
// whose shards stay where they are). Drained workers are left out only
// while that costs nothing in safety: when the others alone would give new
// files a layout that tolerates as many lost workers (a network of seven,
// or six, with one drained), not when they would tolerate fewer (four
// workers, one drained, would give 2+1 instead of 2+2).
func (s *Service) placeable(workers []placement.Worker, keep []string) []placement.Worker {
	now := time.Now()
	out := make([]placement.Worker, 0, len(workers))
	for _, w := range workers {
		if until, ok := s.full.Load(w.ID); !ok || now.After(until.(time.Time)) || slices.Contains(keep, w.ID) {
			out = append(out, w)
		}
	}
	rest := slices.DeleteFunc(slices.Clone(out), func(w placement.Worker) bool {
		return s.workers.Draining(w.ID) && !slices.Contains(keep, w.ID)
	})
	if len(rest) < len(out) && tolerates(len(rest)) >= tolerates(len(out)) {
		return rest
	}
	return out
}

// tolerates is how many lost workers a file written to n workers survives;
// -1 when n workers can hold none.
func tolerates(n int) int {
	l, err := erasure.LayoutFor(n)
	if err != nil {
		return -1
	}
	return l.Tolerates()
}

// putShard sends one shard to a worker and waits until it is durable. A
// worker whose disk is full is left out of placement for a while. data is
// sent without a copy: see shardCodec for how long gRPC reads it.
func (s *Service) putShard(ctx context.Context, workerID string, key *v1.ShardKey, data []byte) error {
	err := s.sendShard(ctx, workerID, key, data)
	if status.Code(err) == codes.ResourceExhausted {
		if _, known := s.full.Swap(workerID, time.Now().Add(fullFor)); !known {
			s.log.Warn("a worker's disk is full; placing shards elsewhere", "worker", workerID, "for", fullFor, "err", err)
		}
	}
	return err
}

func (s *Service) sendShard(ctx context.Context, workerID string, key *v1.ShardKey, data []byte) error {
	client, ok := s.workers.ShardClient(workerID)
	if !ok {
		return fmt.Errorf("worker %s is not live", workerID)
	}
	stream, err := client.PutShard(ctx, shardCodecOption)
	if err != nil {
		return err
	}
	if err := stream.Send(&v1.PutShardRequest{Part: &v1.PutShardRequest_Key{Key: key}}); err != nil {
		_, err = stream.CloseAndRecv()
		return err
	}
	for off := 0; off < len(data); off += chunkBytes {
		end := min(off+chunkBytes, len(data))
		if err := stream.Send(&v1.PutShardRequest{Part: &v1.PutShardRequest_Data{Data: data[off:end]}}); err != nil {
			_, err = stream.CloseAndRecv()
			return err
		}
	}
	_, err = stream.CloseAndRecv()
	return err
}

// maxAmbiguousRetries bounds how often a commit whose outcome is unknown
// is sent again.
const maxAmbiguousRetries = 3

// manifestIs reports whether version of the file has the manifest want
// (each write's is its own: it names the write's id).
func (s *Service) manifestIs(ctx context.Context, fileID string, version int64, want string) (bool, error) {
	resp, err := s.cli.Get(ctx, s.keys.manifest(fileID, version))
	if err != nil {
		return false, err
	}
	return len(resp.Kvs) == 1 && string(resp.Kvs[0].Value) == want, nil
}

// maxUsageRetries bounds how often a commit counts its user's storage use
// again because another write or delete of the user's changed it.
const maxUsageRetries = 100

// chunkBytes is the size of the data messages of shard and file streams.
const chunkBytes = 1 << 20

// commit makes the write visible: the manifest (the head, for a version in
// segments) and the file's record in one transaction; for a revision, only
// if the file is still at the version the revision builds on; for a write
// with shards, only if its intent is still there (a write that outlived
// GCMinAge may have had its shards and segments collected). A failure of
// the transaction itself is an ambiguousError: it may have been applied.
func (s *Service) commit(ctx context.Context, req writeRequest, m *manifest) error {
	fileKey := s.keys.file(req.user, m.FileID)
	intentKey := s.keys.write(m.FileID, m.WriteID)
	usageRetries := 0
	track := req.limits.StorageBytes > 0
	for {
		var cmp clientv3.Cmp
		m.KeepVersions = req.keep
		if req.revise() {
			cur, rev, err := s.current(ctx, req.user, req.fileID, req.expected)
			if err != nil {
				return err
			}
			m.Version = cur.Version + 1
			m.CreatedMs = cur.CreatedMs
			m.KeepVersions = req.keepOr(cur.KeepVersions)
			if m.Filename == "" {
				m.Filename = cur.Filename
			}
			cmp = clientv3.Compare(clientv3.ModRevision(fileKey), "=", rev)
		} else {
			cmp = clientv3.Compare(clientv3.CreateRevision(fileKey), "=", 0)
		}
		// Retention: the versions this one leaves beyond the file's policy
		// go in the same transaction (see retention.go).
		var pruned []prunedVersion
		var freed int64
		if req.revise() {
			var err error
			if pruned, err = s.prunable(ctx, m.FileID, retentionOf(req.limits, m.KeepVersions), time.Now()); err != nil {
				return err
			}
			for _, p := range pruned {
				freed += p.size
			}
		}
		// Without a quota the use is not read: the transaction only
		// checks that it is not counted (see usage).
		u := usage{user: req.user}
		if track {
			var err error
			if u, err = s.readUsage(ctx, req.user, true); err != nil {
				return err
			}
		}
		if l := req.limits.StorageBytes; u.tracked && l > 0 {
			if next := u.use + m.Size - freed; next > l && next > u.use {
				return overQuota(req.user, req.what, req.limits, u.use, formatBytes(m.Size))
			}
		}
		manifest := m.marshal()
		record := encodeRecord(&m.fileRecord)
		usageCmps, usageOps := u.move(s.keys, m.Size-freed)
		// The change mark of an uncounted user is shared by the commits
		// of a batch (see batch.go).
		var marks []string
		if !u.tracked {
			marks, usageOps = []string{s.keys.usageChanged(req.user)}, slices.DeleteFunc(usageOps, func(op clientv3.Op) bool {
				return string(op.KeyBytes()) == s.keys.usageChanged(req.user)
			})
		}
		cmps := append([]clientv3.Cmp{cmp}, usageCmps...)
		if !m.inline() {
			cmps = append(cmps, clientv3.Compare(clientv3.CreateRevision(intentKey), ">", 0))
		}
		ops := []clientv3.Op{
			clientv3.OpPut(fileKey, string(record)),
			clientv3.OpPut(s.keys.manifest(m.FileID, m.Version), manifest),
		}
		if !m.inline() {
			// The manifest owns the shards now. (An inline write has no
			// shards and wrote no intent.)
			ops = append(ops, clientv3.OpDelete(intentKey))
		}
		ops = append(ops, usageOps...)
		for _, p := range pruned {
			ops = append(ops, clientv3.OpDelete(p.key), clientv3.OpDelete(s.keys.writeSegments(m.FileID, p.writeID), clientv3.WithPrefix()))
		}
		txn := commitTxn{cmps: cmps, ops: ops, marks: marks}
		ok, err := s.commits.do(ctx, txn)
		// A commit whose answer was lost (the etcd member it went to
		// died) is sent again: its compares let at most one of the two
		// apply, and a resend refused because the first one applied finds
		// this write's manifest in place.
		for retry := 1; err != nil && retry <= maxAmbiguousRetries && ctx.Err() == nil; retry++ {
			if _, isNotSent := errors.AsType[*notSentError](err); isNotSent {
				break
			}
			s.log.Warn("a commit's outcome is unknown; sending it again", "file", m.FileID, "version", m.Version, "err", err)
			if ok, err = s.commits.do(ctx, txn); err == nil && !ok {
				ok, err = s.manifestIs(ctx, m.FileID, m.Version, manifest)
			}
		}
		if err != nil {
			if notSent, isNotSent := errors.AsType[*notSentError](err); isNotSent {
				return status.FromContextError(notSent.err).Err()
			}
			return &ambiguousError{serving.EtcdError(err)}
		}
		if ok {
			s.dropPruned(ctx, m.FileID, pruned)
			return nil
		}
		if changed, err := s.usageChanged(ctx, u); err != nil {
			return err
		} else if changed {
			// Another write or delete of the user's, or a record
			// created meanwhile: read it again, and keep it.
			track = track || u.tracked || changed
			if usageRetries++; usageRetries > maxUsageRetries {
				return status.Errorf(codes.Aborted, "the storage use of %s kept changing under this write (other writes at once); write again", req.user)
			}
			continue
		}
		if !m.inline() {
			resp, err := s.cli.Get(ctx, intentKey, clientv3.WithCountOnly())
			if err != nil {
				return serving.EtcdError(err)
			}
			if resp.Count == 0 {
				return status.Errorf(codes.Aborted, "the write of file %s took so long that its shards were collected; write it again", m.FileID)
			}
		}
		if !req.revise() {
			return status.Errorf(codes.Internal, "file id %s is already taken", m.FileID)
		}
		if req.expected != 0 {
			cur, _, err := s.current(ctx, req.user, req.fileID, 0)
			if err != nil {
				return err
			}
			return status.Errorf(codes.Aborted, "file %s was revised concurrently and is now at version %d; get it and revise with expected_version %d", req.fileID, cur.Version, cur.Version)
		}
		// An unconditional revision raced another: build on the newer one.
	}
}

// current returns a file's record and its etcd revision, checking the
// expected version when one is given.
func (s *Service) current(ctx context.Context, user, fileID string, expected int64) (fileRecord, int64, error) {
	resp, err := s.cli.Get(ctx, s.keys.file(user, fileID))
	if err != nil {
		return fileRecord{}, 0, serving.EtcdError(err)
	}
	if len(resp.Kvs) == 0 {
		return fileRecord{}, 0, status.Errorf(codes.NotFound, "no file %s", fileID)
	}
	var rec fileRecord
	if err := json.Unmarshal(resp.Kvs[0].Value, &rec); err != nil {
		return fileRecord{}, 0, status.Errorf(codes.DataLoss, "file %s: unreadable record: %v", fileID, err)
	}
	if expected != 0 && rec.Version != expected {
		return fileRecord{}, 0, status.Errorf(codes.FailedPrecondition, "file %s is at version %d, not %d; get it and revise with expected_version %d", fileID, rec.Version, expected, rec.Version)
	}
	return rec, resp.Kvs[0].ModRevision, nil
}

// dropWrite deletes the shards of a write that will not be committed, in
// the background; what it misses, the collector takes later.
func (s *Service) dropWrite(m *manifest) {
	ws := s.workers.StorageWorkers()
	go func() {
		ctx, cancel := context.WithTimeout(context.Background(), time.Minute)
		defer cancel()
		for _, w := range ws {
			if c, ok := s.workers.ShardClient(w.ID); ok {
				_, _ = c.DeleteShards(ctx, &v1.DeleteShardsRequest{Writes: []*v1.WriteRef{{FileId: m.FileID, WriteId: m.WriteID}}})
			}
		}
	}()
}
