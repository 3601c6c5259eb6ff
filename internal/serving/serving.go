// Package serving holds what the pool's and the worker's gRPC servers share
// beyond authorization (package auth): stopping gracefully within a
// deadline, the status a failure of the control plane (etcd) reaches a
// caller with, the kinds of error ([Kind]) that each map to one gRPC code
// (the sandbox runners' and the egress proxy's sentinels have one), and the
// mark on a write's failure that says it did not take
// effect (NotCommitted), which lets a client tell a definite failure from
// an ambiguous one; and the garbage collector's target of a server's
// process (TuneGC).
//
// # Caveats
//
// EtcdError passes a gRPC status through unchanged, so a handler may wrap
// its own status errors in it; etcd's own failures reach the etcd client as
// rpctypes errors, not statuses, and are reported as Unavailable.
//
// TuneGC trades memory for CPU: a pool's or a worker's process may hold up
// to GCHeadroom (64 MiB) of garbage more than the collector's default
// would let it; set GOGC, or GOMEMLIMIT, where memory is tighter.
package serving

import (
	"context"
	"errors"

	"google.golang.org/grpc"
	"google.golang.org/grpc/codes"
	"google.golang.org/grpc/status"

	"github.com/hivemind/taskworker/internal/overload"
)

// GracefulStop stops srv from taking new RPCs and waits for those running
// to finish; when ctx ends first, it cancels them (grpc.Server.Stop) and
// returns ctx's error once they have returned.
func GracefulStop(ctx context.Context, srv *grpc.Server) error {
	done := make(chan struct{})
	go func() {
		srv.GracefulStop()
		close(done)
	}()
	select {
	case <-done:
		return nil
	case <-ctx.Done():
		srv.Stop()
		<-done
		return ctx.Err()
	}
}

// EtcdError turns a failed etcd request into the status for the caller:
// a push-back (package overload) when etcd asked to come back later,
// Canceled or DeadlineExceeded when the request's context ended, a status
// unchanged, anything else Unavailable with etcd's message.
func EtcdError(err error) error {
	if busy := overload.Etcd(err); busy != nil {
		return busy
	}
	switch {
	case errors.Is(err, context.Canceled) || status.Code(err) == codes.Canceled:
		return status.Error(codes.Canceled, "canceled")
	case errors.Is(err, context.DeadlineExceeded):
		return status.Error(codes.DeadlineExceeded, "the control plane (etcd) did not answer in time")
	}
	if _, ok := status.FromError(err); ok {
		return err
	}
	return status.Errorf(codes.Unavailable, "control plane (etcd) unavailable: %v", err)
}
