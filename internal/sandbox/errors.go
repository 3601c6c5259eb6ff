package sandbox

import (
	"context"
	"errors"
	"strings"

	"google.golang.org/grpc/codes"
	"google.golang.org/grpc/status"
)

// Errors from Load: the module or its Spec cannot be deployed. Each is
// wrapped with the detail that says what to change.
var (
	// ErrInvalidSpec: a Spec field is out of range or over an operator
	// maximum.
	ErrInvalidSpec = errors.New("invalid function spec")
	// ErrNotWasm: the bytes are not a WebAssembly module at all.
	ErrNotWasm = errors.New("not a WebAssembly module")
	// ErrInvalidModule: the bytes start like a module but do not decode,
	// validate or instantiate (truncated, malformed, too much memory).
	ErrInvalidModule = errors.New("invalid WebAssembly module")
	// ErrUnknownImport: the module imports something this host does not
	// provide. The message names it.
	ErrUnknownImport = errors.New("module imports what this host does not provide")
	// ErrMissingExport: the Spec's export is not a function the module
	// exports with an Extism signature.
	ErrMissingExport = errors.New("export not found")
)

// Errors from Call. Each ends that call only; the runtime keeps serving.
var (
	// ErrInputTooLarge: the input is over the function's MaxInput.
	ErrInputTooLarge = errors.New("input too large")
	// ErrOutputTooLarge: the function produced more than its MaxOutput.
	ErrOutputTooLarge = errors.New("output too large")
	// ErrTimeout: the call ran past its time limit or the caller's
	// deadline, and was stopped.
	ErrTimeout = errors.New("time limit exceeded")
	// ErrMemoryLimit: the function tried to grow its memory past its
	// MemoryLimit, and was stopped.
	ErrMemoryLimit = errors.New("memory limit exceeded")
	// ErrTrap: the function crashed (a WebAssembly trap, a panic, a call
	// the host refused, or a non-zero exit).
	ErrTrap = errors.New("function trapped")
	// ErrBusy: every instance of the function stayed busy until the
	// caller's context ended; the function did not run.
	ErrBusy = errors.New("all instances busy")
	// ErrCanceled: the caller canceled the call while it ran.
	ErrCanceled = errors.New("call canceled")
	// ErrClosed: the Module or Runtime was closed.
	ErrClosed = errors.New("closed")
)

// GuestError is an error the function itself reported through the Extism
// ABI (a Go guest's returned error, a Rust plugin's Err): the function ran
// to completion and its instance is reused.
type GuestError struct {
	Message string
}

func (e *GuestError) Error() string { return e.Message }

// invalidArgumentPrefix starts a guest error about the call's arguments;
// the guest SDK writes it (docs/ABI.md, "Errors").
const invalidArgumentPrefix = "invalid argument: "

// GRPCStatus maps an error from this package to the gRPC status a caller
// should see: the code and a message that says what happened and what to do.
// Errors from outside this package map to codes.Unknown.
func GRPCStatus(err error) *status.Status {
	if err == nil {
		return status.New(codes.OK, "")
	}
	return status.New(GRPCCode(err), err.Error())
}

// GRPCCode is the gRPC code of GRPCStatus(err).
func GRPCCode(err error) codes.Code {
	var guest *GuestError
	switch {
	case err == nil:
		return codes.OK
	case errors.As(err, &guest):
		if strings.HasPrefix(guest.Message, invalidArgumentPrefix) {
			return codes.InvalidArgument
		}
		return codes.Unknown
	case errors.Is(err, ErrTimeout):
		return codes.DeadlineExceeded
	case errors.Is(err, ErrMemoryLimit), errors.Is(err, ErrOutputTooLarge), errors.Is(err, ErrBusy):
		return codes.ResourceExhausted
	case errors.Is(err, ErrInputTooLarge), errors.Is(err, ErrInvalidSpec), errors.Is(err, ErrNotWasm),
		errors.Is(err, ErrInvalidModule), errors.Is(err, ErrUnknownImport), errors.Is(err, ErrMissingExport):
		return codes.InvalidArgument
	case errors.Is(err, ErrTrap):
		return codes.Aborted
	case errors.Is(err, ErrCanceled), errors.Is(err, context.Canceled):
		return codes.Canceled
	case errors.Is(err, context.DeadlineExceeded):
		return codes.DeadlineExceeded
	case errors.Is(err, ErrClosed):
		return codes.Unavailable
	}
	return codes.Unknown
}
