package starlarkrun

import (
	"errors"
	"fmt"
	"log/slog"
	"path/filepath"
	"time"

	"github.com/hivemind/taskworker/internal/childproc"
)

// Sizes, for configuration and messages.
const (
	KiB = 1 << 10
	MiB = 1 << 20
	GiB = 1 << 30
)

// minMemory is the smallest memory limit a call may have: the child's own
// heap (the interpreter, its caches) takes a few MiB of it.
const minMemory = 16 * MiB

// Config is a Pool's configuration: how to start a child, how many to keep,
// the operator's maximums, which no call's Limits may exceed, and the
// defaults for the Limits a call leaves zero.
type Config struct {
	// Command starts one child process: an absolute path and its arguments.
	// The program must call Main and exit with its result, for example
	// {os.Executable(), ChildArg} in a binary whose main calls Main when its
	// first argument is ChildArg. Required.
	Command []string

	// MaxChildren bounds the child processes alive at once, which is also
	// the number of calls that run at once; more calls wait for a child.
	MaxChildren int
	// MaxChildrenPerCaller bounds the children one caller's calls
	// (Request.Caller) hold at once; when children are short, the caller
	// holding fewest is served first. Zero: all but one of MaxChildren,
	// so that another caller's call never waits for one caller's, and no
	// more than the CPUs (childproc.DefaultPerTenant).
	MaxChildrenPerCaller int
	// WarmChildren are started by New for the default limits, so the first
	// calls do not wait for a process to start.
	WarmChildren int
	// ScriptsPerChild is how many compiled scripts one child keeps; the
	// least recently used is dropped beyond that.
	ScriptsPerChild int
	// StartTimeout bounds how long a child may take to start and report
	// ready.
	StartTimeout time.Duration

	// The operator's maximums for any one call.
	MaxMemory  int64         // memory of one call's child, bytes
	MaxTimeout time.Duration // wall time of one call
	MaxInput   int           // argument bytes of one call
	MaxOutput  int           // result bytes of one call
	MaxSource  int           // bytes of one script

	// Defaults are the Limits used for the fields a call leaves zero.
	Defaults Limits

	// MaxLogLine is the longest log line kept, in bytes; longer lines are
	// cut. MaxLogLinesPerCall lines are kept per call; the rest are dropped
	// and counted in one last line.
	MaxLogLine         int
	MaxLogLinesPerCall int

	// IdleAfter is how long a call may compute, while other users have
	// calls on the worker, before its thread drops to the idle CPU class
	// (SCHED_IDLE on Linux): it then runs only when nothing of the normal
	// class wants the CPU, so the others' calls and the worker itself do
	// not wait for a long call's time slice. A user who keeps a CPU's
	// worth of calls running has them all run in the idle class while
	// others have calls; a user alone never does. Zero: no call is moved
	// (docs/RATIONALE.md, "Why do long calls drop to the idle class?").
	IdleAfter time.Duration

	// AllowUnconfined lets children run scripts without their seccomp
	// filter where they cannot install it (the worker's
	// --allow-unconfined). False: such a child refuses, and calls fail
	// with ErrUnconfined (docs/RATIONALE.md, "Why fail closed?").
	AllowUnconfined bool

	// Logger receives the pool's own messages (children that died, lines of
	// scripts run without a Host). Nil: slog.Default().
	Logger *slog.Logger
}

// Limits are one call's limits (childproc.Limits, the same type as a
// WebAssembly function's). Zero fields take Config.Defaults. Memory bounds
// the live heap of the child running the call: the script's values, its
// globals and the interpreter's own (see the package documentation);
// Timeout includes loading the script.
type Limits = childproc.Limits

// DefaultConfig returns the configuration a worker starts with, but for
// Command, which the caller must set.
func DefaultConfig() Config {
	return Config{
		MaxChildren:     8,
		WarmChildren:    2,
		ScriptsPerChild: 32,
		StartTimeout:    10 * time.Second,
		MaxMemory:       1 * GiB,
		MaxTimeout:      5 * time.Minute,
		MaxInput:        16 * MiB,
		MaxOutput:       16 * MiB,
		MaxSource:       256 * KiB,
		Defaults: Limits{
			Timeout:   5 * time.Second,
			Memory:    64 * MiB,
			MaxInput:  1 * MiB,
			MaxOutput: 1 * MiB,
		},
		MaxLogLine:         4 * KiB,
		MaxLogLinesPerCall: 100,
		IdleAfter:          10 * time.Millisecond,
	}
}

// Validate reports every setting that is out of range, saying what to change.
func (c Config) Validate() error {
	var errs []error
	bad := func(format string, args ...any) { errs = append(errs, fmt.Errorf(format, args...)) }
	switch {
	case len(c.Command) == 0:
		bad("Command is empty: set it to the worker binary and the argument that makes it call starlarkrun.Main, e.g. {os.Executable(), starlarkrun.ChildArg}")
	case !filepath.IsAbs(c.Command[0]):
		bad("Command[0] (%q) must be an absolute path (children start in /); use os.Executable()", c.Command[0])
	}
	if c.MaxChildren <= 0 {
		bad("MaxChildren (%d) must be positive", c.MaxChildren)
	}
	if c.MaxChildrenPerCaller < 0 || c.MaxChildrenPerCaller > c.MaxChildren {
		bad("MaxChildrenPerCaller (%d) must be between 0 (all but one) and MaxChildren (%d)", c.MaxChildrenPerCaller, c.MaxChildren)
	}
	if c.WarmChildren < 0 || c.WarmChildren > c.MaxChildren {
		bad("WarmChildren (%d) must be between 0 and MaxChildren (%d)", c.WarmChildren, c.MaxChildren)
	}
	if c.ScriptsPerChild <= 0 {
		bad("ScriptsPerChild (%d) must be positive", c.ScriptsPerChild)
	}
	if c.StartTimeout <= 0 {
		bad("StartTimeout (%s) must be positive", c.StartTimeout)
	}
	if c.MaxMemory < minMemory {
		bad("MaxMemory (%d bytes) must be at least %d MiB", c.MaxMemory, minMemory/MiB)
	}
	if c.MaxMemory > 64*GiB {
		bad("MaxMemory (%d bytes) cannot be over 64 GiB", c.MaxMemory)
	}
	if c.MaxTimeout <= 0 {
		bad("MaxTimeout (%s) must be positive", c.MaxTimeout)
	}
	if c.MaxInput <= 0 || c.MaxInput > maxFrame/2 {
		bad("MaxInput (%d) must be between 1 and %d", c.MaxInput, maxFrame/2)
	}
	if c.MaxOutput <= 0 || c.MaxOutput > maxFrame/2 {
		bad("MaxOutput (%d) must be between 1 and %d", c.MaxOutput, maxFrame/2)
	}
	if c.MaxSource <= 0 || c.MaxSource > maxFrame/2 {
		bad("MaxSource (%d) must be between 1 and %d", c.MaxSource, maxFrame/2)
	}
	if c.MaxLogLine <= 0 || c.MaxLogLine > 64*KiB {
		bad("MaxLogLine (%d) must be between 1 and %d", c.MaxLogLine, 64*KiB)
	}
	if c.MaxLogLinesPerCall <= 0 {
		bad("MaxLogLinesPerCall (%d) must be positive", c.MaxLogLinesPerCall)
	}
	if err := validateLimits(c.Defaults, c); err != nil {
		bad("Defaults: %w", err)
	}
	return errors.Join(errs...)
}

// validateLimits checks complete limits against the operator's maximums in c.
func validateLimits(l Limits, c Config) error {
	var errs []error
	bad := func(format string, args ...any) { errs = append(errs, fmt.Errorf(format, args...)) }
	if l.Timeout <= 0 || l.Timeout > c.MaxTimeout {
		bad("timeout %s must be positive and at most %s (the operator's MaxTimeout)", l.Timeout, c.MaxTimeout)
	}
	if l.Memory < minMemory || l.Memory > c.MaxMemory {
		bad("memory %s must be between %s and %s (the operator's MaxMemory)",
			formatBytes(l.Memory), formatBytes(minMemory), formatBytes(c.MaxMemory))
	}
	if l.MaxInput <= 0 || l.MaxInput > c.MaxInput {
		bad("max input %s must be positive and at most %s (the operator's MaxInput)",
			formatBytes(int64(l.MaxInput)), formatBytes(int64(c.MaxInput)))
	}
	if l.MaxOutput <= 0 || l.MaxOutput > c.MaxOutput {
		bad("max output %s must be positive and at most %s (the operator's MaxOutput)",
			formatBytes(int64(l.MaxOutput)), formatBytes(int64(c.MaxOutput)))
	}
	return errors.Join(errs...)
}

var formatBytes = childproc.FormatBytes
