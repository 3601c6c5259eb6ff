package starlarkrun

import (
	"context"
	"errors"
	"fmt"

	"google.golang.org/grpc/codes"
	"google.golang.org/grpc/status"
)

// Errors about the script, from Check at deploy time and from Call.
var (
	// ErrInvalidScript: the script does not compile (a syntax error, an
	// undefined name, a load statement), is too large, or does not define
	// the function. Wraps a *ScriptError where there is a position.
	ErrInvalidScript = errors.New("invalid Starlark script")
	// ErrInvalidLimits: a call's limits are out of range or over an
	// operator maximum.
	ErrInvalidLimits = errors.New("invalid limits")
)

// Errors from Call. Each ends that call only; the pool keeps serving.
var (
	// ErrInvalidArgs: the arguments are not a JSON array or object, or do
	// not fit the function's parameters.
	ErrInvalidArgs = errors.New("invalid arguments")
	// ErrInputTooLarge: the arguments are over the call's MaxInput.
	ErrInputTooLarge = errors.New("input too large")
	// ErrOutputTooLarge: the result is over the call's MaxOutput.
	ErrOutputTooLarge = errors.New("output too large")
	// ErrScript: the script failed while running (fail(), a type error,
	// division by zero, recursion, a result with no JSON form). Wraps a
	// *ScriptError with the message and the line.
	ErrScript = errors.New("script error")
	// ErrTimeout: the call ran past its time limit or the caller's
	// deadline, and its child process was killed.
	ErrTimeout = errors.New("time limit exceeded")
	// ErrMemoryLimit: the script needed more memory than the call's limit,
	// and was stopped.
	ErrMemoryLimit = errors.New("memory limit exceeded")
	// ErrCanceled: the caller canceled the call while it ran; its child
	// process was killed.
	ErrCanceled = errors.New("call canceled")
	// ErrCrashed: the child process died or broke the pipe protocol for a
	// reason other than a limit (an interpreter bug, a kill from outside).
	// The call's outcome is unknown; the child is replaced.
	ErrCrashed = errors.New("Starlark process crashed")
	// ErrBusy: every child stayed busy until the caller's context ended;
	// the function did not run.
	ErrBusy = errors.New("all Starlark processes busy")
	// ErrStart: a child process could not be started.
	ErrStart = errors.New("cannot start a Starlark process")
	// ErrClosed: the Pool was closed.
	ErrClosed = errors.New("pool closed")
)

// ScriptError is a Starlark error with its position in the script.
type ScriptError struct {
	Script    string // the script's file name
	Line, Col int    // where in the script, 1-based; 0 when unknown
	Message   string // Starlark's message
	// Backtrace is Starlark's traceback of a run-time error, innermost
	// call last; empty for compile errors.
	Backtrace string
}

func (e *ScriptError) Error() string {
	switch {
	case e.Line > 0 && e.Col > 0:
		return fmt.Sprintf("%s:%d:%d: %s", e.Script, e.Line, e.Col, e.Message)
	case e.Line > 0:
		return fmt.Sprintf("%s:%d: %s", e.Script, e.Line, e.Message)
	}
	return fmt.Sprintf("%s: %s", e.Script, e.Message)
}

// GRPCStatus maps an error from this package to the gRPC status a caller
// should see: the code and a message that says what happened and what to do.
func GRPCStatus(err error) *status.Status {
	if err == nil {
		return status.New(codes.OK, "")
	}
	return status.New(GRPCCode(err), err.Error())
}

// GRPCCode is the gRPC code of GRPCStatus(err). Errors from outside this
// package map to codes.Unknown.
func GRPCCode(err error) codes.Code {
	switch {
	case err == nil:
		return codes.OK
	case errors.Is(err, ErrTimeout), errors.Is(err, context.DeadlineExceeded):
		return codes.DeadlineExceeded
	case errors.Is(err, ErrMemoryLimit), errors.Is(err, ErrOutputTooLarge), errors.Is(err, ErrBusy):
		return codes.ResourceExhausted
	case errors.Is(err, ErrInvalidScript), errors.Is(err, ErrInvalidLimits), errors.Is(err, ErrInvalidArgs),
		errors.Is(err, ErrInputTooLarge):
		return codes.InvalidArgument
	case errors.Is(err, ErrScript):
		return codes.Unknown
	case errors.Is(err, ErrCrashed):
		return codes.Aborted
	case errors.Is(err, ErrCanceled), errors.Is(err, context.Canceled):
		return codes.Canceled
	case errors.Is(err, ErrStart), errors.Is(err, ErrClosed):
		return codes.Unavailable
	}
	return codes.Unknown
}
