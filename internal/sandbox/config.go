package sandbox

import (
	"errors"
	"fmt"
	"log/slog"
	"time"

	"github.com/hivemind/taskworker/internal/childproc"
)

// Sizes, for configuration and messages.
const (
	KiB = 1 << 10
	MiB = 1 << 20
	GiB = 1 << 30

	// pageSize is a WebAssembly page; memory limits are whole pages.
	pageSize = 64 * KiB
)

// Config is a Runtime's configuration: the operator's maximums, which no
// Spec may exceed, and the defaults for the Spec fields a deploy leaves zero.
type Config struct {
	// CacheDir keeps compiled modules across restarts (wazero's compilation
	// cache). Empty: compiled code is kept in memory only.
	CacheDir string

	// The operator's maximums for any one function.
	MaxMemory      int64         // linear memory of one instance, bytes
	MaxTimeout     time.Duration // wall time of one call
	MaxInput       int           // input bytes of one call
	MaxOutput      int           // output bytes of one call
	MaxConcurrency int           // instances of one function at once

	// Defaults is the Spec used for the fields a Spec leaves zero.
	Defaults Spec

	// MaxLogLine is the longest guest log line kept, in bytes; longer
	// lines are cut. MaxLogLinesPerCall lines are kept per call, and at
	// most LogLinesPerSecond per function (bursts of twice that); the rest
	// are dropped and counted.
	MaxLogLine         int
	MaxLogLinesPerCall int
	LogLinesPerSecond  int

	// ChildCommand, when set, runs every call in a supervised child
	// process (package childproc) instead of in this one: the worker binary
	// and ChildArg, whose main calls ChildMain. A call that overruns its
	// time limit is ended by killing its process, so guests run without
	// wazero's per-loop deadline checks, behind a second boundary. Empty:
	// calls run in this process, stopped by those checks.
	ChildCommand []string
	// AllowUnconfined lets child processes run guests without their seccomp
	// filter where they cannot install it (the worker's
	// --allow-unconfined). False: such a child refuses, and calls and
	// loads fail with childproc.ErrUnconfined (docs/RATIONALE.md, "Why
	// fail closed?"). Only with ChildCommand.
	AllowUnconfined bool
	// ChildStartTimeout bounds a child's start, from exec to loaded and
	// hardened. Zero: 30 s.
	ChildStartTimeout time.Duration

	// Logger receives the runtime's own messages (dropped guest log lines,
	// discarded instances). Nil: slog.Default().
	Logger *slog.Logger

	// checked says the modules this Runtime loads were checked by Load in
	// another (a child process's parent's): compile them once, without the
	// checker.
	checked bool

	// noCloseOnContextDone turns off the deadline checks wazero compiles
	// into loops, for benchmarks only: a runaway guest then runs forever.
	noCloseOnContextDone bool
}

// DefaultConfig returns the configuration a worker starts with.
func DefaultConfig() Config {
	return Config{
		MaxMemory:      1 * GiB,
		MaxTimeout:     5 * time.Minute,
		MaxInput:       16 * MiB,
		MaxOutput:      16 * MiB,
		MaxConcurrency: 64,
		Defaults: Spec{
			Concurrency: 4,
			Limits: Limits{
				Memory:    64 * MiB,
				Timeout:   5 * time.Second,
				MaxInput:  1 * MiB,
				MaxOutput: 1 * MiB,
			},
		},
		MaxLogLine:         4 * KiB,
		MaxLogLinesPerCall: 100,
		LogLinesPerSecond:  100,
	}
}

// Validate reports every setting that is out of range, saying what to change.
func (c Config) Validate() error {
	var errs []error
	bad := func(format string, args ...any) { errs = append(errs, fmt.Errorf(format, args...)) }
	if c.MaxMemory < 2*pageSize {
		bad("MaxMemory (%d bytes) must be at least %d bytes (two 64 KiB pages)", c.MaxMemory, 2*pageSize)
	}
	if c.MaxMemory > 4*GiB {
		bad("MaxMemory (%d bytes) cannot be over 4 GiB, the size of a 32-bit WebAssembly memory", c.MaxMemory)
	}
	if c.MaxTimeout <= 0 {
		bad("MaxTimeout (%s) must be positive", c.MaxTimeout)
	}
	if c.MaxInput <= 0 {
		bad("MaxInput (%d) must be positive", c.MaxInput)
	}
	if c.MaxOutput <= 0 {
		bad("MaxOutput (%d) must be positive", c.MaxOutput)
	}
	if c.MaxConcurrency <= 0 {
		bad("MaxConcurrency (%d) must be positive", c.MaxConcurrency)
	}
	if c.MaxLogLine <= 0 || c.MaxLogLinesPerCall <= 0 || c.LogLinesPerSecond <= 0 {
		bad("MaxLogLine (%d), MaxLogLinesPerCall (%d) and LogLinesPerSecond (%d) must be positive",
			c.MaxLogLine, c.MaxLogLinesPerCall, c.LogLinesPerSecond)
	}
	if c.ChildStartTimeout < 0 {
		bad("ChildStartTimeout (%s) must not be negative", c.ChildStartTimeout)
	}
	if err := c.Defaults.validate(c); err != nil {
		bad("Defaults: %w", err)
	}
	return errors.Join(errs...)
}

// Spec is one function's entry point and limits, chosen at deploy time.
// Zero fields take the Runtime's Config.Defaults.
type Spec struct {
	// Export is the exported function to call, with the Extism signature
	// () -> i32 (or () with no result). Required.
	Export string
	// Concurrency is how many instances may run calls at once; more calls
	// wait for one to be free.
	Concurrency int
	// Limits are each call's. Memory bounds the linear memory of one
	// instance, rounded up to whole 64 KiB pages: the module's memory and
	// the Extism kernel's (which holds the input, the output and host-made
	// blocks) together.
	Limits
}

// Limits are one call's limits, the same type as a Starlark call's.
type Limits = childproc.Limits

// withDefaults fills the zero fields of s from d.
func (s Spec) withDefaults(d Spec) Spec {
	if s.Concurrency == 0 {
		s.Concurrency = d.Concurrency
	}
	s.Limits = s.Limits.WithDefaults(d.Limits)
	s.Memory = (s.Memory + pageSize - 1) / pageSize * pageSize
	return s
}

// validate checks the limits of s (the export is checked against the module)
// against the operator's maximums in c.
func (s Spec) validate(c Config) error {
	var errs []error
	bad := func(format string, args ...any) { errs = append(errs, fmt.Errorf(format, args...)) }
	switch {
	case s.Memory < 2*pageSize:
		bad("Memory (%d bytes) must be at least %d bytes (two 64 KiB pages: the module's and the Extism kernel's)",
			s.Memory, 2*pageSize)
	case s.Memory > c.MaxMemory:
		bad("Memory (%s) is over the operator maximum of %s (Config.MaxMemory): ask for less memory",
			formatBytes(s.Memory), formatBytes(c.MaxMemory))
	}
	switch {
	case s.Timeout <= 0:
		bad("Timeout (%s) must be positive", s.Timeout)
	case s.Timeout > c.MaxTimeout:
		bad("Timeout (%s) is over the operator maximum of %s (Config.MaxTimeout): ask for less time", s.Timeout, c.MaxTimeout)
	}
	switch {
	case s.Concurrency <= 0:
		bad("Concurrency (%d) must be positive", s.Concurrency)
	case s.Concurrency > c.MaxConcurrency:
		bad("Concurrency (%d) is over the operator maximum of %d instances (Config.MaxConcurrency)", s.Concurrency, c.MaxConcurrency)
	}
	switch {
	case s.MaxInput <= 0:
		bad("MaxInput (%d) must be positive", s.MaxInput)
	case s.MaxInput > c.MaxInput:
		bad("MaxInput (%s) is over the operator maximum of %s (Config.MaxInput)", formatBytes(int64(s.MaxInput)), formatBytes(int64(c.MaxInput)))
	}
	switch {
	case s.MaxOutput <= 0:
		bad("MaxOutput (%d) must be positive", s.MaxOutput)
	case s.MaxOutput > c.MaxOutput:
		bad("MaxOutput (%s) is over the operator maximum of %s (Config.MaxOutput)", formatBytes(int64(s.MaxOutput)), formatBytes(int64(c.MaxOutput)))
	}
	return errors.Join(errs...)
}

var formatBytes = childproc.FormatBytes
