package sandbox

import (
	"strings"

	"github.com/hivemind/taskworker/internal/childproc"
)

// Errors from Load: the module or its Spec cannot be deployed. Each is
// wrapped with the detail that says what to change.
var (
	// ErrInvalidSpec: a Spec field is out of range or over an operator
	// maximum.
	ErrInvalidSpec = childproc.NewError(childproc.KindInvalid, "invalid function spec")
	// ErrNotWasm: the bytes are not a WebAssembly module at all.
	ErrNotWasm = childproc.NewError(childproc.KindInvalid, "not a WebAssembly module")
	// ErrInvalidModule: the bytes start like a module but do not decode,
	// validate or instantiate (truncated, malformed, too much memory).
	ErrInvalidModule = childproc.NewError(childproc.KindInvalid, "invalid WebAssembly module")
	// ErrUnknownImport: the module imports something this host does not
	// provide. The message names it.
	ErrUnknownImport = childproc.NewError(childproc.KindInvalid, "module imports what this host does not provide")
	// ErrMissingExport: the Spec's export is not a function the module
	// exports with an Extism signature.
	ErrMissingExport = childproc.NewError(childproc.KindInvalid, "export not found")
)

// Errors from Call. Each ends that call only; the runtime keeps serving.
// Those both runners return for the same reasons are childproc's.
var (
	ErrInputTooLarge  = childproc.ErrInputTooLarge
	ErrOutputTooLarge = childproc.ErrOutputTooLarge
	ErrTimeout        = childproc.ErrTimeout
	ErrMemoryLimit    = childproc.ErrMemoryLimit
	ErrBusy           = childproc.ErrBusy
	ErrCanceled       = childproc.ErrCanceled
	ErrClosed         = childproc.ErrClosed
	// ErrUnconfined: a child process could not install its seccomp filter
	// and Config.AllowUnconfined is false; Load and Call fail with it
	// until the worker runs where it can, or is allowed to run unconfined.
	ErrUnconfined = childproc.ErrUnconfined

	// ErrTrap: the function crashed (a WebAssembly trap, a panic, a call
	// the host refused, or a non-zero exit).
	ErrTrap = childproc.NewError(childproc.KindCrashed, "function trapped")
)

// GuestError is an error the function itself reported through the Extism
// ABI (a Go guest's returned error, a Rust plugin's Err): the function ran
// to completion and its instance is reused.
type GuestError struct {
	Message string
}

func (e *GuestError) Error() string { return e.Message }

// Kind is the kind of a guest error: InvalidArgument when the guest SDK
// said the arguments are wrong, Unknown otherwise.
func (e *GuestError) Kind() childproc.Kind {
	if strings.HasPrefix(e.Message, invalidArgumentPrefix) {
		return childproc.KindInvalid
	}
	return childproc.KindUnknown
}

// invalidArgumentPrefix starts a guest error about the call's arguments;
// the guest SDK writes it (docs/ABI.md, "Errors").
const invalidArgumentPrefix = "invalid argument: "
