package serving

import (
	"context"
	"errors"

	"google.golang.org/grpc/codes"
	"google.golang.org/grpc/status"
)

// Kind is what went wrong with a request, as its caller sees it: each kind
// is one gRPC code. Packages that serve calls (the sandbox runners, the
// egress proxy) make their sentinel errors with NewError, and the pool's
// and the worker's RPC boundaries map any error to its status with
// GRPCStatus, so the mapping to codes is here and nowhere else.
type Kind uint8

// The kinds. Each package documents which of its errors has which kind.
const (
	KindUnknown     Kind = iota // not ours, or a function's own error: Unknown
	KindInvalid                 // the request, a rule, a module or an argument is wrong: InvalidArgument
	KindDenied                  // a policy refuses it: PermissionDenied
	KindExhausted               // a size, memory, budget or capacity ran out: ResourceExhausted
	KindTimeout                 // a time limit or the caller's deadline passed: DeadlineExceeded
	KindCanceled                // the caller canceled: Canceled
	KindUnavailable             // a destination, a process or the component is not there: Unavailable
	KindCrashed                 // code crashed, or its process died: Aborted
	KindRefused                 // the component cannot do it as configured: FailedPrecondition
)

var kindCodes = [...]codes.Code{
	KindUnknown:     codes.Unknown,
	KindInvalid:     codes.InvalidArgument,
	KindDenied:      codes.PermissionDenied,
	KindExhausted:   codes.ResourceExhausted,
	KindTimeout:     codes.DeadlineExceeded,
	KindCanceled:    codes.Canceled,
	KindUnavailable: codes.Unavailable,
	KindCrashed:     codes.Aborted,
	KindRefused:     codes.FailedPrecondition,
}

// Code is the gRPC code of errors of kind k; Unknown for a kind not
// listed.
func (k Kind) Code() codes.Code {
	if int(k) >= len(kindCodes) {
		return codes.Unknown
	}
	return kindCodes[k]
}

// String is the kind's name, as in KindDenied without the prefix.
func (k Kind) String() string {
	switch k {
	case KindInvalid:
		return "invalid"
	case KindDenied:
		return "denied"
	case KindExhausted:
		return "exhausted"
	case KindTimeout:
		return "timeout"
	case KindCanceled:
		return "canceled"
	case KindUnavailable:
		return "unavailable"
	case KindCrashed:
		return "crashed"
	case KindRefused:
		return "refused"
	}
	return "unknown"
}

// NewError returns an error of kind k with message msg: a sentinel, which
// callers wrap (%w) with what happened and what to do.
func NewError(k Kind, msg string) error { return &kindError{kind: k, msg: msg} }

type kindError struct {
	kind Kind
	msg  string
}

func (e *kindError) Error() string { return e.msg }
func (e *kindError) Kind() Kind    { return e.kind }

// KindOf is the kind of err: that of the first error in its chain that has
// one (a Kind() Kind method), or of a context error; KindUnknown
// otherwise.
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

// GRPCCode is the gRPC code a caller sees for err: OK for nil.
func GRPCCode(err error) codes.Code {
	if err == nil {
		return codes.OK
	}
	return KindOf(err).Code()
}

// GRPCStatus is the status a caller sees for err: its kind's code and its
// message, which says what happened and what to do.
func GRPCStatus(err error) *status.Status {
	if err == nil {
		return status.New(codes.OK, "")
	}
	return status.New(GRPCCode(err), err.Error())
}
