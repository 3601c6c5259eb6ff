package childproc

import "github.com/hivemind/taskworker/internal/serving"

// Kind is what went wrong with a call, as its caller sees it: the network's
// one set of error kinds and their gRPC codes (internal/serving). Every
// error the runners return has a kind, so GRPCCode finds its code.
type Kind = serving.Kind

// The kinds the runners use.
const (
	KindUnknown     = serving.KindUnknown     // the function's own error, or not ours: Unknown
	KindInvalid     = serving.KindInvalid     // the module, script, limits or arguments are wrong: InvalidArgument
	KindTimeout     = serving.KindTimeout     // a time limit or the caller's deadline passed: DeadlineExceeded
	KindCanceled    = serving.KindCanceled    // the caller canceled: Canceled
	KindExhausted   = serving.KindExhausted   // memory, output, or every child busy: ResourceExhausted
	KindCrashed     = serving.KindCrashed     // the code crashed, or its process died: Aborted
	KindUnavailable = serving.KindUnavailable // closed, or no process could start: Unavailable
	KindRefused     = serving.KindRefused     // the worker cannot run it as configured (unconfined): FailedPrecondition
)

// NewError, KindOf, GRPCCode and GRPCStatus are serving's: a sentinel of a
// kind, the kind of an error, and the code and status a caller sees.
var (
	NewError   = serving.NewError
	KindOf     = serving.KindOf
	GRPCCode   = serving.GRPCCode
	GRPCStatus = serving.GRPCStatus
)

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
