package starlarkrun

import (
	"bytes"
	"context"
	"crypto/sha256"
	"encoding/hex"
	"encoding/json"
	"errors"
	"fmt"
	"log/slog"
	"sync"

	"github.com/hivemind/taskworker/internal/childproc"
)

// Request is one call of a Starlark function.
type Request struct {
	// Name is the script's file name in messages, e.g. "add.star".
	// Empty: "script.star".
	Name string
	// Source is the script. Children cache it compiled and loaded, keyed
	// by its SHA-256, so passing the same bytes again is cheap.
	Source []byte
	// Function is the top-level function to call.
	Function string
	// Args are the arguments as JSON: an array for positional arguments,
	// an object for keyword arguments; empty for none.
	Args json.RawMessage
	// Limits are the call's limits; zero fields take Config.Defaults.
	Limits Limits
	// Tenant keeps calls apart: calls with different tenants never run in
	// the same child process. The worker passes the function's owner.
	Tenant string
	// Caller is who the call is for: children are shared fairly between
	// callers (childproc.FairQueue), so that one caller's many calls delay
	// only its own. The worker passes the calling user; empty is one
	// shared caller.
	Caller string
	// Host serves the call's host builtins. Nil: log lines go to
	// Config.Logger and nothing else is granted.
	Host Host
}

// Pool runs Starlark calls in supervised child processes, kept by a
// childproc.Supervisor per class (memory limit and tenant). It is safe for
// concurrent use.
type Pool struct {
	cfg Config
	log *slog.Logger
	sup *childproc.Supervisor[class, *process]
	// load chooses each call's CPU class.
	load *callerLoad
	// layers logs once which layers confine the children.
	layers sync.Once
}

// Stats counts a Pool's children.
type Stats = childproc.SupervisorStats

// New validates cfg and starts its warm children. A child that cannot start
// is an error wrapping ErrStart: Command is wrong. A child that refuses to
// run unconfined is not: New logs it as an error and returns the pool,
// whose calls fail with ErrUnconfined, so that callers learn why.
func New(cfg Config) (*Pool, error) {
	if err := cfg.Validate(); err != nil {
		return nil, fmt.Errorf("starlarkrun: invalid config: %w", err)
	}
	cfg.Command = append([]string(nil), cfg.Command...)
	p := &Pool{cfg: cfg, log: cfg.Logger, load: newCallerLoad(cfg.IdleAfter)}
	if p.log == nil {
		p.log = slog.Default()
	}
	p.sup = childproc.NewSupervisor(childproc.SupervisorConfig[class, *process]{
		Start:       p.start,
		MaxChildren: cfg.MaxChildren,
		PerTenant:   cfg.MaxChildrenPerCaller,
		Replace:     true,
		Noun:        "Starlark processes",
		Logger:      p.log,
	})
	err := p.sup.Warm(context.Background(), class{memory: cfg.Defaults.Memory}, cfg.WarmChildren)
	switch {
	case errors.Is(err, ErrUnconfined):
		p.log.Error("Starlark functions cannot run on this worker", "error", err)
	case err != nil:
		p.Close()
		return nil, err
	}
	return p, nil
}

// Stats returns the pool's counts.
func (p *Pool) Stats() Stats { return p.sup.Stats() }

// Close kills every child, including those running calls (which fail with
// ErrClosed), and waits for them and every goroutine of the pool.
func (p *Pool) Close() error {
	p.sup.Close()
	return nil
}

// Call runs req.Function of req.Source with req.Args in a child process and
// returns its result as JSON. Errors wrap this package's sentinels; each
// ends this call only.
func (p *Pool) Call(ctx context.Context, req Request) (json.RawMessage, error) {
	name := req.Name
	if name == "" {
		name = "script.star"
	}
	limits := req.Limits.WithDefaults(p.cfg.Defaults)
	if err := validateLimits(limits, p.cfg); err != nil {
		return nil, fmt.Errorf("%w: %s: %w", ErrInvalidLimits, name, err)
	}
	if len(req.Source) > p.cfg.MaxSource {
		return nil, fmt.Errorf("%w: %s is %s, over the operator's maximum of %s", ErrInvalidScript, name,
			formatBytes(int64(len(req.Source))), formatBytes(int64(p.cfg.MaxSource)))
	}
	if req.Function == "" {
		return nil, fmt.Errorf("%w: %s: no function named to call", ErrInvalidScript, name)
	}
	if len(req.Args) > limits.MaxInput {
		return nil, fmt.Errorf("%w: the arguments of %s are %s, over the function's limit of %s; send less or deploy with a larger input limit (at most %s)",
			ErrInputTooLarge, req.Function, formatBytes(int64(len(req.Args))), formatBytes(int64(limits.MaxInput)), formatBytes(int64(p.cfg.MaxInput)))
	}
	args := bytes.TrimSpace(req.Args)
	if err := checkArgs(args); err != nil {
		return nil, fmt.Errorf("%w: %s: %w", ErrInvalidArgs, req.Function, err)
	}
	sum := sha256.Sum256(req.Source)
	host := req.Host
	if host == nil {
		host = slogHost{logger: p.log, script: name}
	}
	c := &callFrame{
		msg: callMsg{
			Hash: hex.EncodeToString(sum[:]), Name: name, Function: req.Function,
			Args: args, MaxOutput: limits.MaxOutput,
		},
		source: req.Source,
		host:   &hostCallState{host: host},
		pool:   p,
	}
	var end func()
	c.msg.IdleNow, c.msg.IdleAfter, end = p.load.begin(req.Caller)
	defer end()
	payload, err := json.Marshal(c.msg)
	if err != nil {
		return nil, fmt.Errorf("%w: %s: %w", ErrInvalidArgs, req.Function, err)
	}

	cl := class{memory: limits.Memory, tenant: req.Tenant}
	for attempt := 1; ; attempt++ {
		out, err := p.run(ctx, req.Caller, cl, c, payload, limits)
		var ce *childproc.CallError
		if errors.As(err, &ce) && ce.NotSent() && attempt < 3 {
			continue // the child died before it got the call (killed while idle): another one
		}
		return out, err
	}
}

// run runs one call on one child.
func (p *Pool) run(ctx context.Context, caller string, cl class, c *callFrame, payload []byte, limits Limits) (json.RawMessage, error) {
	fn := c.msg.Function
	proc, err := p.sup.Acquire(ctx, caller, cl)
	if err != nil {
		return nil, err
	}
	// Host builtins (a secret read, a fetch) end with the call's time.
	hostCtx, cancel := context.WithTimeout(ctx, limits.Timeout)
	defer cancel()
	out, errFrame, keep, err := proc.Call(ctx, childproc.Exchange{
		Frame: frameCall, Payload: payload, Limits: limits,
		Limit: func(typ byte) int {
			if typ == frameHostCall {
				return hostCallLimit
			}
			return 0
		},
		Serve:      func(typ byte, payload []byte) error { return proc.serve(hostCtx, c, typ, payload) },
		ExitMemory: exitMemory,
	})
	switch {
	case err == nil && errFrame == nil:
		p.putBack(proc, keep)
		return out, nil
	case err == nil:
		var e errorMsg
		if err := json.Unmarshal(errFrame, &e); err != nil {
			p.sup.Discard(proc)
			return nil, fmt.Errorf("%w: %s: its process sent a bad error frame: %v; retry it", ErrCrashed, fn, err)
		}
		// After a memory overrun or an interpreter panic, the child exits
		// by itself, having said why.
		p.putBack(proc, e.Kind != errKindMemory && e.Kind != errKindInternal)
		return nil, p.childCallError(c.msg, e)
	}
	p.sup.Discard(proc)
	ce := err.(*childproc.CallError)
	select {
	case <-p.sup.Done():
		return nil, fmt.Errorf("%w: %s: the pool was closed during the call", ErrClosed, fn)
	default:
	}
	switch {
	case ce.Sentinel != nil:
		return nil, fmt.Errorf("%s: %w", fn, ce)
	case ce.NotSent():
		return nil, fmt.Errorf("%w: %s: %w", ErrCrashed, fn, ce)
	}
	p.log.Warn("starlark child died during a call", "script", c.msg.Name, "function", fn,
		"pid", proc.ready.PID, "exit", proc.ExitSummary(), "error", ce.Err, "stderr", proc.Stderr())
	effects := "it called no host builtin, so it had no effect: retrying it is safe"
	if c.hostCalls > 0 {
		effects = "it had called host builtins, so it may have had effects"
	}
	return nil, fmt.Errorf("%w: %s: %w; %s", ErrCrashed, fn, ce, effects)
}

// putBack returns a child that may serve again to the Supervisor, and
// discards one that may not.
func (p *Pool) putBack(proc *process, keep bool) {
	if keep {
		p.sup.Release(proc)
	} else {
		p.sup.Discard(proc)
	}
}

// childCallError turns a child's error frame into this package's error.
func (p *Pool) childCallError(m callMsg, e errorMsg) error {
	se := &ScriptError{Script: m.Name, Line: e.Line, Col: e.Col, Message: e.Message, Backtrace: e.Backtrace}
	switch e.Kind {
	case errKindScript:
		return fmt.Errorf("%w: %w", ErrScript, se)
	case errKindCompile:
		return fmt.Errorf("%w: %w", ErrInvalidScript, se)
	case errKindArgs:
		return fmt.Errorf("%w: %w", ErrInvalidArgs, se)
	case errKindOutput:
		return fmt.Errorf("%w: %s; return less, or deploy it with a larger output limit (at most %s)",
			ErrOutputTooLarge, e.Message, formatBytes(int64(p.cfg.MaxOutput)))
	case errKindMemory:
		return fmt.Errorf("%w: %w; make it keep less data, or deploy it with a larger memory limit (at most %s)",
			ErrMemoryLimit, se, formatBytes(p.cfg.MaxMemory))
	}
	return fmt.Errorf("%w: %s: %s; retry it", ErrCrashed, m.Function, e.Message)
}

// checkArgs checks that args, trimmed, is empty, null, or a JSON array or
// object.
func checkArgs(args []byte) error {
	if len(args) == 0 {
		return nil
	}
	if !json.Valid(args) {
		return errors.New("the arguments are not valid JSON")
	}
	if c := args[0]; c != '[' && c != '{' && string(args) != "null" {
		return errors.New("the arguments must be a JSON array (positional) or a JSON object (keyword arguments)")
	}
	return nil
}

// start starts a child for cl: the Supervisor's SupervisorConfig.Start.
func (p *Pool) start(ctx context.Context, cl class) (*process, error) {
	proc, err := startProcess(ctx, &p.cfg, cl, p.sup.Track)
	if err != nil {
		return nil, err
	}
	p.layers.Do(func() { childproc.LogLayers(p.log, "Starlark", proc.Process, proc.ready.Hardening) })
	p.log.Debug("starlark child started", "pid", proc.ready.PID, "memory", cl.memory,
		"baseline_vsz", proc.ready.BaselineVSZ, "rlimit_as", proc.ready.AddressSpace, "hardening", proc.ready.Hardening,
		"namespaces", proc.Namespaced())
	return proc, nil
}
