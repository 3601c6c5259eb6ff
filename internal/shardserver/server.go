package shardserver

import (
	"context"
	"errors"
	"io"
	"log/slog"
	"math"

	"google.golang.org/grpc"

	v1 "github.com/hivemind/taskworker/api/taskworker/v1"
	"github.com/hivemind/taskworker/internal/shardstore"
)

// getChunk bounds the bytes of one GetShardResponse, well under gRPC's default 4 MiB message limit.
const getChunk = 1 << 20

// listBatch bounds the shards of one ListShardsResponse: 4096 keys of the longest IDs stay near 1 MiB.
// A write with more shards on this worker comes in several consecutive messages.
const listBatch = 4096

// Server serves ShardService over a shardstore.Store. It does not authenticate: the worker's gRPC server
// does, with auth.UnaryWorkerInterceptor and StreamWorkerInterceptor. Its methods are safe for concurrent use.
type Server struct {
	v1.UnimplementedShardServiceServer
	store *shardstore.Store
	opts  Options
	log   *slog.Logger
}

var _ v1.ShardServiceServer = (*Server)(nil)

// New returns a Server over store; the caller keeps ownership of store and closes it after the gRPC
// server has stopped. Zero fields of opts take their defaults. New panics if opts.Validate fails or store
// is nil: validate Options with the rest of the worker's configuration first.
func New(store *shardstore.Store, opts Options) *Server {
	if store == nil {
		panic("shardserver: New needs a store")
	}
	if err := opts.Validate(); err != nil {
		panic(err)
	}
	opts = opts.withDefaults()
	return &Server{store: store, opts: opts, log: opts.Logger}
}

// PutShard stores one shard: a key message, then data messages. It answers once shardstore.Put has made
// the shard durable; if the stream fails first (the caller cancels, disconnects, or sends too much), Put
// removes its temp file and no shard, old or new, is replaced.
func (s *Server) PutShard(stream grpc.ClientStreamingServer[v1.PutShardRequest, v1.PutShardResponse]) error {
	const op = "PutShard"
	first, err := stream.Recv()
	if err == io.EOF {
		return invalid("PutShard: the stream was empty; send the shard's key first, then its bytes")
	}
	if err != nil {
		return err
	}
	if first.GetKey() == nil {
		return invalid("PutShard: the first message must be the shard's key (part.key), then the bytes (part.data); it was data")
	}
	k, err := KeyFromProto(first.GetKey())
	if err != nil {
		return s.toStatus(op, nil, err)
	}
	r := &putReader{stream: stream, key: k, max: s.opts.MaxShardSize}
	info, err := s.store.Put(stream.Context(), k, r)
	if err != nil {
		if r.err != nil {
			return r.err // the stream's failure, already a status; Put's error only wraps it
		}
		return s.toStatus(op, &k, err)
	}
	return stream.SendAndClose(&v1.PutShardResponse{Size: info.Size})
}

// putReader presents the data messages of a PutShard stream as an io.Reader, holding one message at a
// time, and stops at max bytes.
type putReader struct {
	stream grpc.ClientStreamingServer[v1.PutShardRequest, v1.PutShardResponse]
	key    shardstore.Key
	max    int64
	n      int64  // bytes received
	buf    []byte // the rest of the current message
	err    error  // the status to answer with, once reading failed
}

func (r *putReader) Read(p []byte) (int, error) {
	if err := r.next(); err != nil {
		return 0, err
	}
	n := copy(p, r.buf)
	r.buf = r.buf[n:]
	return n, nil
}

// WriteTo writes each data message to w as it comes, without copying it
// into a buffer of the caller's first (shardstore.Put uses it).
func (r *putReader) WriteTo(w io.Writer) (int64, error) {
	var written int64
	for {
		if err := r.next(); err == io.EOF {
			return written, nil
		} else if err != nil {
			return written, err
		}
		n, err := w.Write(r.buf)
		written += int64(n)
		r.buf = r.buf[n:]
		if err != nil {
			return written, err
		}
	}
}

// next receives data messages until one is not empty (r.buf), the stream
// ends (io.EOF) or fails (r.err).
func (r *putReader) next() error {
	for len(r.buf) == 0 {
		if r.err != nil {
			return r.err
		}
		msg, err := r.stream.Recv()
		switch {
		case err == io.EOF:
			return io.EOF
		case err != nil:
			r.err = err
		case msg.GetKey() != nil:
			r.err = invalid("PutShard: shard %s: a second key came after %d bytes of data; send one key, then only data", r.key, r.n)
		default:
			r.buf = msg.GetData()
			r.n += int64(len(r.buf))
			if r.n > r.max {
				r.err = tooLarge(r.key, r.max)
			}
		}
	}
	return nil
}

// GetShard sends a shard's bytes, verified against their checksum, in messages of at most 1 MiB. An empty
// shard is a stream with no messages and an OK status.
func (s *Server) GetShard(req *v1.GetShardRequest, stream grpc.ServerStreamingServer[v1.GetShardResponse]) error {
	const op = "GetShard"
	k, err := KeyFromProto(req.GetKey())
	if err != nil {
		return s.toStatus(op, nil, err)
	}
	data, _, err := s.store.Get(stream.Context(), k)
	if err != nil {
		return s.toStatus(op, &k, err)
	}
	for off := 0; off < len(data); off += getChunk {
		if err := stream.Send(&v1.GetShardResponse{Data: data[off:min(off+getChunk, len(data))]}); err != nil {
			return err
		}
	}
	return nil
}

// DeleteShards removes the shards named by key and every shard of the writes named. A shard that is not
// there is not an error. The request is checked whole before anything is deleted; a store failure midway
// leaves the shards deleted so far deleted, and the caller retries (deleting is idempotent). Deleted counts
// the shards this call found and removed; concurrent deletions of the same shard may each count it.
func (s *Server) DeleteShards(ctx context.Context, req *v1.DeleteShardsRequest) (*v1.DeleteShardsResponse, error) {
	const op = "DeleteShards"
	if n := len(req.GetKeys()) + len(req.GetWrites()); n > s.opts.MaxDeleteKeys {
		return nil, invalid("DeleteShards: %d keys and writes in one request, at most %d are accepted; split the request", n, s.opts.MaxDeleteKeys)
	}
	keys := make([]shardstore.Key, len(req.GetKeys()))
	for i, pk := range req.GetKeys() {
		k, err := KeyFromProto(pk)
		if err != nil {
			return nil, invalid("DeleteShards: keys[%d]: %v", i, err)
		}
		keys[i] = k
	}
	for i, w := range req.GetWrites() {
		if err := (shardstore.Key{FileID: w.GetFileId(), WriteID: w.GetWriteId()}).Validate(); err != nil {
			return nil, invalid("DeleteShards: writes[%d]: %v", i, err)
		}
	}

	var deleted int64
	for _, k := range keys {
		// Stat tells whether the shard is there, for the count; a corrupt one is there too.
		if _, err := s.store.Stat(ctx, k); errors.Is(err, shardstore.ErrNotFound) {
			continue
		}
		if err := s.store.Delete(ctx, k); err != nil {
			return nil, s.toStatus(op, &k, err)
		}
		deleted++
	}
	for _, w := range req.GetWrites() {
		for k, err := range s.store.List(ctx, w.GetFileId()) {
			if err != nil {
				return nil, s.toStatus(op, nil, err)
			}
			if k.WriteID != w.GetWriteId() {
				continue
			}
			if err := s.store.Delete(ctx, k); err != nil {
				return nil, s.toStatus(op, &k, err)
			}
			deleted++
		}
	}
	return &v1.DeleteShardsResponse{Deleted: deleted}, nil
}

// ListShards sends one message per write this worker holds shards of (several for a write of more than
// listBatch shards, consecutively), with the shards' keys and the newest shard's modification time. It
// relies on shardstore.List yielding the shards of one write together, which its directory walk does.
// Each shard costs a Stat (open, two small reads), for its time.
func (s *Server) ListShards(_ *v1.ListShardsRequest, stream grpc.ServerStreamingServer[v1.ListShardsResponse]) error {
	const op = "ListShards"
	ctx := stream.Context()
	var (
		cur    v1.WriteRef
		keys   []shardstore.Key
		newest int64
	)
	flush := func() error {
		if len(keys) == 0 {
			return nil
		}
		msg := &v1.ListShardsResponse{
			Write:    &v1.WriteRef{FileId: cur.FileId, WriteId: cur.WriteId},
			Shards:   KeysToProto(keys),
			NewestMs: newest,
		}
		keys, newest = keys[:0], 0
		return stream.Send(msg)
	}
	for k, err := range s.store.List(ctx, "") {
		if err != nil {
			return s.toStatus(op, nil, err)
		}
		if k.FileID != cur.FileId || k.WriteID != cur.WriteId || len(keys) == listBatch {
			if err := flush(); err != nil {
				return err
			}
			cur.FileId, cur.WriteId = k.FileID, k.WriteID
		}
		info, err := s.store.Stat(ctx, k)
		switch {
		case errors.Is(err, shardstore.ErrNotFound):
			continue // deleted since List saw it
		case errors.Is(err, shardstore.ErrCorrupt):
			// Listed all the same: the shard's place is taken, and the pool decides whether to repair or
			// collect it. Its time is unknown.
		case err != nil:
			return s.toStatus(op, &k, err)
		default:
			newest = max(newest, info.ModTime.UnixMilli())
		}
		keys = append(keys, k)
	}
	return flush()
}

// Usage reports the store's shards, the bytes its files take (temp files of writes in progress
// included), and the free space of the filesystem under it. It walks the store: O(shards).
func (s *Server) Usage(ctx context.Context, _ *v1.UsageRequest) (*v1.UsageResponse, error) {
	u, err := s.store.Usage(ctx)
	if err != nil {
		return nil, s.toStatus("Usage", nil, err)
	}
	return &v1.UsageResponse{
		Shards:    u.Shards,
		Bytes:     u.ShardBytes + u.TempBytes,
		FreeBytes: int64(min(u.DiskFree, math.MaxInt64)),
	}, nil
}
