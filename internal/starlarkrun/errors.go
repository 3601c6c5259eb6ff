package starlarkrun

import (
	"fmt"

	"github.com/hivemind/taskworker/internal/childproc"
)

// Errors about the script, from Check at deploy time and from Call.
var (
	// ErrInvalidScript: the script does not compile (a syntax error, an
	// undefined name, a load statement), is too large, or does not define
	// the function. Wraps a *ScriptError where there is a position.
	ErrInvalidScript = childproc.NewError(childproc.KindInvalid, "invalid Starlark script")
	// ErrInvalidLimits: a call's limits are out of range or over an
	// operator maximum.
	ErrInvalidLimits = childproc.NewError(childproc.KindInvalid, "invalid limits")
)

// Errors from Call. Each ends that call only; the pool keeps serving.
// Those both runners return for the same reasons are childproc's.
var (
	ErrInputTooLarge  = childproc.ErrInputTooLarge
	ErrOutputTooLarge = childproc.ErrOutputTooLarge
	ErrTimeout        = childproc.ErrTimeout
	ErrMemoryLimit    = childproc.ErrMemoryLimit
	ErrBusy           = childproc.ErrBusy
	ErrCanceled       = childproc.ErrCanceled
	ErrClosed         = childproc.ErrClosed
	// ErrUnconfined: a child could not install its seccomp filter and
	// Config.AllowUnconfined is false; no script runs until the worker
	// runs where it can, or is allowed to run unconfined.
	ErrUnconfined = childproc.ErrUnconfined

	// ErrInvalidArgs: the arguments are not a JSON array or object, or do
	// not fit the function's parameters.
	ErrInvalidArgs = childproc.NewError(childproc.KindInvalid, "invalid arguments")
	// ErrScript: the script failed while running (fail(), a type error,
	// division by zero, recursion, a result with no JSON form). Wraps a
	// *ScriptError with the message and the line.
	ErrScript = childproc.NewError(childproc.KindUnknown, "script error")
	// ErrCrashed: the child process died or broke the pipe protocol for a
	// reason other than a limit (an interpreter bug, a kill from outside).
	// The call's outcome is unknown; the child is replaced.
	ErrCrashed = childproc.NewError(childproc.KindCrashed, "Starlark process crashed")
	// ErrStart: a child process could not be started.
	ErrStart = childproc.NewError(childproc.KindUnavailable, "cannot start a Starlark process")
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
