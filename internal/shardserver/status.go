package shardserver

import (
	"context"
	"errors"
	"fmt"
	"syscall"

	"google.golang.org/grpc/codes"
	"google.golang.org/grpc/status"

	"github.com/hivemind/taskworker/internal/shardstore"
)

// toStatus turns an error of the store into the gRPC status the pool acts on: op names the RPC, k the
// shard (nil when the error concerns no single shard). This is the only place errors become codes.
func (s *Server) toStatus(op string, k *shardstore.Key, err error) error {
	if _, ok := status.FromError(err); ok {
		return err // already a status: made by this package, or the stream's own
	}
	shard := "the shard store"
	if k != nil {
		shard = "shard " + k.String()
	}
	var corrupt *shardstore.CorruptError
	switch {
	case errors.Is(err, context.Canceled), errors.Is(err, context.DeadlineExceeded):
		return status.FromContextError(err).Err()
	case errors.Is(err, shardstore.ErrInvalidKey):
		return status.Errorf(codes.InvalidArgument, "%s: %v", op, err)
	case errors.Is(err, shardstore.ErrNotFound):
		return status.Errorf(codes.NotFound, "%s: %s is not on this worker; read the block from its other shards (and rebuild this one if it should be here)", op, shard)
	case errors.As(err, &corrupt):
		s.log.Warn("shardserver: refused to serve a corrupt shard", "op", op, "shard", corrupt.Key.String(), "path", corrupt.Path, "reason", corrupt.Reason)
		return status.Errorf(codes.DataLoss, "%s: %s on this worker is corrupt (%s) and will be repaired; read the block from its other shards meanwhile", op, shard, corrupt.Reason)
	case errors.Is(err, shardstore.ErrCorrupt):
		return status.Errorf(codes.DataLoss, "%s: %s on this worker is corrupt and will be repaired; read the block from its other shards meanwhile", op, shard)
	case errors.Is(err, shardstore.ErrTooLarge):
		return status.Errorf(codes.ResourceExhausted, "%s: %s is larger than this worker's store accepts: %v; use smaller blocks", op, shard, err)
	case errors.Is(err, syscall.ENOSPC):
		s.log.Warn("shardserver: disk full", "op", op, "shard", shard, "err", err)
		return status.Errorf(codes.ResourceExhausted, "%s: this worker's disk is full; place %s on another worker", op, shard)
	case errors.Is(err, shardstore.ErrClosed):
		return status.Errorf(codes.Unavailable, "%s: this worker's shard store is closed (the worker is stopping); use another worker", op)
	}
	s.log.Error("shardserver: store failed", "op", op, "shard", shard, "err", err)
	return status.Errorf(codes.Internal, "%s: %s failed on this worker: %v; see the worker's log, and use another worker meanwhile", op, shard, err)
}

// tooLarge is the status of a put whose payload passed max bytes.
func tooLarge(k shardstore.Key, max int64) error {
	return status.Errorf(codes.ResourceExhausted,
		"PutShard: shard %s is larger than this worker accepts (%d bytes); use smaller blocks or more data shards per block", k, max)
}

// invalid is an InvalidArgument status for a malformed request.
func invalid(format string, args ...any) error {
	return status.Error(codes.InvalidArgument, fmt.Sprintf(format, args...))
}
