// Package overload is how TaskWorker pushes back under load, and how its
// clients take it: a node that cannot take a request now answers
// ResourceExhausted with a retry delay (errdetails.RetryInfo) in the
// status details, having done nothing; a client retries such answers, and
// only those, with backoff and jitter, as long as its own deadline allows.
//
// A request is never failed by a timer of the node's own that fires before
// the caller's deadline: the caller decides how long to wait, and the
// node says "later" rather than "too late".
//
// # Caveats
//
// ResourceExhausted without RetryInfo (arguments over the limit, a quota
// used up) is final and not retried. Streams are not retried: their
// messages are not kept to be sent again.
package overload

import (
	"context"
	"errors"
	"math/rand/v2"
	"time"

	"go.etcd.io/etcd/api/v3/v3rpc/rpctypes"
	"google.golang.org/genproto/googleapis/rpc/errdetails"
	"google.golang.org/grpc"
	"google.golang.org/grpc/codes"
	"google.golang.org/grpc/status"
	"google.golang.org/protobuf/types/known/durationpb"
)

// Error returns a ResourceExhausted status that asks the caller to retry
// after delay: the request was not carried out.
func Error(delay time.Duration, msg string) error {
	st := status.New(codes.ResourceExhausted, msg)
	if d, err := st.WithDetails(&errdetails.RetryInfo{RetryDelay: durationpb.New(delay)}); err == nil {
		st = d
	}
	return st.Err()
}

// etcdBusyDelay is the retry delay asked for when etcd pushes back: about
// the time it takes etcd to apply a backlog of its entries.
const etcdBusyDelay = 50 * time.Millisecond

// Etcd returns the pushed-back error for an etcd client error that asks
// to come back later (etcd's "too many requests": it took nothing), or nil
// for any other error.
func Etcd(err error) error {
	if errors.Is(err, rpctypes.ErrTooManyRequests) {
		return Error(etcdBusyDelay, "the control plane (etcd) is busy; retry shortly")
	}
	return nil
}

// RetryDelay returns the delay a pushed-back error asks for, and whether
// err is one (ResourceExhausted with RetryInfo).
func RetryDelay(err error) (time.Duration, bool) {
	st, ok := status.FromError(err)
	if !ok || st.Code() != codes.ResourceExhausted {
		return 0, false
	}
	for _, d := range st.Details() {
		if ri, ok := d.(*errdetails.RetryInfo); ok {
			return ri.GetRetryDelay().AsDuration(), true
		}
	}
	return 0, false
}

// Retry bounds the retries of pushed-back calls.
type Retry struct {
	// Attempts is the most tries of one call, the first included.
	Attempts int
	// MaxWait caps one wait between tries.
	MaxWait time.Duration
}

// DefaultRetry is what the Go client uses.
var DefaultRetry = Retry{Attempts: 8, MaxWait: 2 * time.Second}

// Wait returns how long to wait before try number attempt (1 for the first
// retry) after an answer asking for delay: delay doubled per retry, capped
// at MaxWait, with up to half of it taken off at random so that callers
// pushed back together do not come back together.
func (r Retry) Wait(delay time.Duration, attempt int) time.Duration {
	w := max(delay, time.Millisecond) << min(attempt-1, 16)
	w = min(w, r.MaxWait)
	return w - rand.N(w/2+1)
}

// UnaryClientInterceptor retries pushed-back calls. It never waits past
// the call's deadline: when the next try could not start before it, the
// caller gets the pushed-back error at once.
func (r Retry) UnaryClientInterceptor() grpc.UnaryClientInterceptor {
	return func(ctx context.Context, method string, req, reply any, cc *grpc.ClientConn, invoker grpc.UnaryInvoker, opts ...grpc.CallOption) error {
		for attempt := 1; ; attempt++ {
			err := invoker(ctx, method, req, reply, cc, opts...)
			delay, pushedBack := RetryDelay(err)
			if !pushedBack || attempt >= r.Attempts {
				return err
			}
			wait := r.Wait(delay, attempt)
			if d, ok := ctx.Deadline(); ok && time.Until(d) <= wait {
				return err
			}
			t := time.NewTimer(wait)
			select {
			case <-ctx.Done():
				t.Stop()
				return err
			case <-t.C:
			}
		}
	}
}
