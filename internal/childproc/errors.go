package childproc

import (
	"context"
	"errors"

	"google.golang.org/grpc/codes"
	"google.golang.org/grpc/status"
)

// Kind is what went wrong with a call, as its caller sees it: each kind is
// one gRPC code. Every error the runners return has a kind (GRPCCode finds
// it), so the mapping to codes is here and nowhere else.
type Kind uint8

const (
	KindUnknown     Kind = iota // the function's own error, or not ours: Unknown
	KindInvalid                 // the module, script, limits or arguments are wrong: InvalidArgument
	KindTimeout                 // a time limit or the caller's deadline passed: DeadlineExceeded
	KindCanceled                // the caller canceled: Canceled
	KindExhausted               // memory, output, or every child busy: ResourceExhausted
	KindCrashed                 // the code crashed, or its process died: Aborted
	KindUnavailable             // closed, or no process could start: Unavailable
	KindRefused                 // the worker cannot run it as configured (unconfined): FailedPrecondition
)

var kindCodes = [...]codes.Code{
	KindUnknown:     codes.Unknown,
	KindInvalid:     codes.InvalidArgument,
	KindTimeout:     codes.DeadlineExceeded,
	KindCanceled:    codes.Canceled,
	KindExhausted:   codes.ResourceExhausted,
	KindCrashed:     codes.Aborted,
	KindUnavailable: codes.Unavailable,
	KindRefused:     codes.FailedPrecondition,
}

// Code is the gRPC code of errors of kind k.
func (k Kind) Code() codes.Code { return kindCodes[k] }

// NewError returns a sentinel error of kind k: the runners' sentinels are
// made with it, and wrapped with what to do.
func NewError(k Kind, msg string) error { return &kindError{kind: k, msg: msg} }

type kindError struct {
	kind Kind
	msg  string
}

func (e *kindError) Error() string { return e.msg }
func (e *kindError) Kind() Kind    { return e.kind }

// The errors both runners return for the same reasons. Each ends one call
// only.
var (
	// ErrInputTooLarge: the input is over the call's MaxInput.
	ErrInputTooLarge = NewError(KindInvalid, "input too large")
	// ErrOutputTooLarge: the result is over the call's MaxOutput.
	ErrOutputTooLarge = NewError(KindExhausted, "output too large")
	// ErrTimeout: the call ran past its time limit or the caller's
	// deadline, and was stopped.
	ErrTimeout = NewError(KindTimeout, "time limit exceeded")
	// ErrMemoryLimit: the code needed more memory than the call's limit,
	// and was stopped.
	ErrMemoryLimit = NewError(KindExhausted, "memory limit exceeded")
	// ErrCanceled: the caller canceled the call.
	ErrCanceled = NewError(KindCanceled, "call canceled")
	// ErrBusy: every child stayed busy until the caller's context ended;
	// the function did not run.
	ErrBusy = NewError(KindExhausted, "busy")
	// ErrClosed: the Supervisor (its runner) was closed.
	ErrClosed = NewError(KindUnavailable, "closed")
	// ErrUnconfined: a child could not install its seccomp filter and, as
	// the operator did not allow it (--allow-unconfined), refused to run
	// any code. Start's error wraps it with the cause and what to do.
	ErrUnconfined = NewError(KindRefused, "the worker cannot confine function code (no seccomp filter) and refuses to run it")
)

// KindOf is the kind of err: that of the first error in its chain that has
// one, or of a context error.
func KindOf(err error) Kind {
	var k interface{ Kind() Kind }
	switch {
	case errors.As(err, &k):
		return k.Kind()
	case errors.Is(err, context.DeadlineExceeded):
		return KindTimeout
	case errors.Is(err, context.Canceled):
		return KindCanceled
	}
	return KindUnknown
}

// GRPCCode is the gRPC code a caller sees for err.
func GRPCCode(err error) codes.Code {
	if err == nil {
		return codes.OK
	}
	return KindOf(err).Code()
}

// GRPCStatus is the status a caller sees for err: its code, and its message,
// which says what happened and what to do.
func GRPCStatus(err error) *status.Status {
	if err == nil {
		return status.New(codes.OK, "")
	}
	return status.New(GRPCCode(err), err.Error())
}
