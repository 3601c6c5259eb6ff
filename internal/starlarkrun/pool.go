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
	"sync/atomic"
	"time"
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
	// Host serves the call's host builtins. Nil: log lines go to
	// Config.Logger and nothing else is granted.
	Host Host
}

// Pool runs Starlark calls in supervised child processes. It is safe for
// concurrent use.
type Pool struct {
	cfg Config
	log *slog.Logger

	// ctx ends with Close, stopping children that are starting.
	ctx    context.Context
	cancel context.CancelFunc

	mu      sync.Mutex
	closed  bool
	idle    map[class][]*process
	all     map[*process]struct{} // started and not yet discarded
	alive   int                   // children alive or starting: at most MaxChildren
	changed chan struct{}         // closed and replaced when a child is freed or lost

	wg sync.WaitGroup // every goroutine the pool starts

	started   atomic.Uint64
	discarded atomic.Uint64
}

// Stats counts a Pool's children.
type Stats struct {
	Alive     int    // children alive or starting
	Idle      int    // children waiting for a call
	Started   uint64 // children started since New
	Discarded uint64 // children killed or lost since New (timeouts, memory, crashes)
}

// New validates cfg and starts its warm children. A child that cannot start
// is an error wrapping ErrStart: Command is wrong.
func New(cfg Config) (*Pool, error) {
	if err := cfg.Validate(); err != nil {
		return nil, fmt.Errorf("starlarkrun: invalid config: %w", err)
	}
	cfg.Command = append([]string(nil), cfg.Command...)
	p := &Pool{
		cfg:     cfg,
		log:     cfg.Logger,
		idle:    map[class][]*process{},
		all:     map[*process]struct{}{},
		changed: make(chan struct{}),
	}
	if p.log == nil {
		p.log = slog.Default()
	}
	p.ctx, p.cancel = context.WithCancel(context.Background())
	warm := class{memory: cfg.Defaults.Memory}
	for range cfg.WarmChildren {
		p.mu.Lock()
		p.alive++
		p.mu.Unlock()
		proc, err := p.start(p.ctx, warm)
		if err != nil {
			p.Close()
			return nil, err
		}
		p.release(proc)
	}
	return p, nil
}

// Stats returns the pool's counts.
func (p *Pool) Stats() Stats {
	p.mu.Lock()
	defer p.mu.Unlock()
	s := Stats{Alive: p.alive, Started: p.started.Load(), Discarded: p.discarded.Load()}
	for _, l := range p.idle {
		s.Idle += len(l)
	}
	return s
}

// Close kills every child, including those running calls (which fail with
// ErrClosed), and waits for them and every goroutine of the pool.
func (p *Pool) Close() error {
	p.mu.Lock()
	if p.closed {
		p.mu.Unlock()
		return nil
	}
	p.closed = true
	procs := make([]*process, 0, len(p.all))
	for proc := range p.all {
		procs = append(procs, proc)
	}
	p.idle = map[class][]*process{}
	p.notifyLocked()
	p.mu.Unlock()
	p.cancel()
	for _, proc := range procs {
		proc.Kill()
	}
	p.wg.Wait()
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
	limits := req.Limits.withDefaults(p.cfg.Defaults)
	if err := limits.validate(p.cfg); err != nil {
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

	cl := class{memory: limits.Memory, tenant: req.Tenant}
	for attempt := 1; ; attempt++ {
		out, err := p.run(ctx, cl, c, limits)
		if errors.Is(err, errNotSent) && attempt < 3 {
			continue // the child died before it got the call (killed while idle): another one
		}
		return out, err
	}
}

// errNotSent is a call the child never received: its pipe was already
// broken. Retrying it elsewhere is safe.
var errNotSent = errors.New("the call could not be sent to its process")

// run runs one call on one child.
func (p *Pool) run(ctx context.Context, cl class, c *callFrame, limits Limits) (json.RawMessage, error) {
	name, fn := c.msg.Name, c.msg.Function
	proc, err := p.acquire(ctx, cl)
	if err != nil {
		return nil, err
	}
	callCtx, cancel := context.WithTimeout(ctx, limits.Timeout)
	defer cancel()
	start := time.Now()
	stop := context.AfterFunc(callCtx, proc.Kill)
	out, err := proc.exchange(callCtx, c)
	killed := !stop()
	if err == nil {
		if killed {
			// The result came as the deadline passed: it stands, the child
			// does not.
			p.discard(proc)
		} else {
			p.release(proc)
		}
		return out, nil
	}
	var ce *childError
	if errors.As(err, &ce) && !killed {
		if ce.msg.Kind == errKindMemory || ce.msg.Kind == errKindInternal {
			p.discard(proc) // it exits by itself, having said why
		} else {
			p.release(proc)
		}
		return nil, p.childCallError(c.msg, ce)
	}

	// The pipe broke, the child broke the protocol, or we killed it.
	proc.Kill()
	<-proc.Exited()
	p.discard(proc)
	elapsed := time.Since(start).Round(time.Millisecond)
	switch {
	case p.isClosed():
		return nil, fmt.Errorf("%w: %s: the pool was closed during the call", ErrClosed, fn)
	case killed && ctx.Err() == context.Canceled:
		return nil, fmt.Errorf("%w: %s: canceled by the caller after %s; its process was stopped", ErrCanceled, fn, elapsed)
	case killed && ctx.Err() != nil:
		return nil, fmt.Errorf("%w: %s: the caller's deadline passed after %s; the call was stopped", ErrTimeout, fn, elapsed)
	case killed:
		return nil, fmt.Errorf("%w: %s ran longer than its %s time limit and was stopped; make it do less, or deploy it with a longer timeout (at most %s)",
			ErrTimeout, fn, limits.Timeout, p.cfg.MaxTimeout)
	case errors.Is(err, errNotSent):
		return nil, fmt.Errorf("%w: %s: %w; retry it", ErrCrashed, fn, err)
	case errors.Is(err, errResultTooLargeFrame):
		return nil, fmt.Errorf("%w: %s returned more than %s of JSON; return less, or deploy it with a larger output limit (at most %s)",
			ErrOutputTooLarge, fn, formatBytes(int64(limits.MaxOutput)), formatBytes(int64(p.cfg.MaxOutput)))
	case proc.OutOfMemory(exitMemory):
		return nil, fmt.Errorf("%w: %s: %s went past its %s memory limit and its process was stopped; make it keep less data, or deploy it with a larger memory limit (at most %s)",
			ErrMemoryLimit, name, fn, formatBytes(limits.Memory), formatBytes(p.cfg.MaxMemory))
	}
	p.log.Warn("starlark child died during a call", "script", name, "function", fn,
		"pid", proc.ready.PID, "exit", proc.ExitSummary(), "error", err, "stderr", proc.Stderr())
	effects := "it called no host builtin, so it had no effect: retrying it is safe"
	if c.hostCalls > 0 {
		effects = "it had called host builtins, so it may have had effects"
	}
	return nil, fmt.Errorf("%w: %s: its process ended during the call (%s%s); %s",
		ErrCrashed, fn, proc.ExitSummary(), proc.StderrSummary(), effects)
}

// childCallError turns a child's error frame into this package's error.
func (p *Pool) childCallError(m callMsg, ce *childError) error {
	e := ce.msg
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

// acquire returns an idle child of cl, starting one if there is room,
// replacing an idle child of another class if not, or waiting for one.
func (p *Pool) acquire(ctx context.Context, cl class) (*process, error) {
	for {
		p.mu.Lock()
		if p.closed {
			p.mu.Unlock()
			return nil, ErrClosed
		}
		if l := p.idle[cl]; len(l) > 0 {
			proc := l[len(l)-1]
			p.idle[cl] = l[:len(l)-1]
			p.mu.Unlock()
			if !proc.Alive() { // killed while idle
				p.discard(proc)
				continue
			}
			return proc, nil
		}
		if p.alive >= p.cfg.MaxChildren {
			// Take the slot of an idle child of another class, or wait.
			victim := p.takeIdleLocked()
			if victim == nil {
				changed := p.changed
				p.mu.Unlock()
				select {
				case <-changed:
					continue
				case <-ctx.Done():
					return nil, fmt.Errorf("%w: all %d processes stayed busy (%v); the function did not run; retry later",
						ErrBusy, p.cfg.MaxChildren, context.Cause(ctx))
				}
			}
			delete(p.all, victim)
			victim.Kill()
		} else {
			p.alive++
		}
		p.mu.Unlock()
		proc, err := p.start(ctx, cl)
		if err != nil {
			if ctx.Err() != nil {
				return nil, fmt.Errorf("%w: no process was free in time (%v); the function did not run", ErrBusy, context.Cause(ctx))
			}
			return nil, err
		}
		return proc, nil
	}
}

// takeIdleLocked removes and returns an idle child of any class, or nil.
func (p *Pool) takeIdleLocked() *process {
	for cl, l := range p.idle {
		if len(l) > 0 {
			proc := l[0]
			p.idle[cl] = l[1:]
			return proc
		}
	}
	return nil
}

// start starts a child for cl in a slot already counted in alive; on
// failure it gives the slot back.
func (p *Pool) start(ctx context.Context, cl class) (*process, error) {
	ctx, cancel := context.WithCancel(ctx)
	defer cancel()
	stop := context.AfterFunc(p.ctx, cancel)
	defer stop()
	proc, err := startProcess(ctx, &p.cfg, cl, p.track)
	p.mu.Lock()
	defer p.mu.Unlock()
	if err == nil && p.closed {
		proc.Kill()
		err = ErrClosed
	}
	if err != nil {
		p.alive--
		p.notifyLocked()
		return nil, err
	}
	p.started.Add(1)
	p.all[proc] = struct{}{}
	p.log.Debug("starlark child started", "pid", proc.ready.PID, "memory", cl.memory,
		"baseline_vsz", proc.ready.BaselineVSZ, "rlimit_as", proc.ready.AddressSpace, "hardening", proc.ready.Hardening)
	return proc, nil
}

// track runs f on a goroutine the pool waits for at Close, unless the pool
// is closed.
func (p *Pool) track(f func()) bool {
	p.mu.Lock()
	defer p.mu.Unlock()
	if p.closed {
		return false
	}
	p.wg.Add(1)
	go func() {
		defer p.wg.Done()
		f()
	}()
	return true
}

// release returns a healthy child to the idle list.
func (p *Pool) release(proc *process) {
	p.mu.Lock()
	defer p.mu.Unlock()
	if p.closed {
		proc.Kill()
		return
	}
	p.idle[proc.class] = append(p.idle[proc.class], proc)
	p.notifyLocked()
}

// discard kills a child that must not serve again and starts a replacement
// for its class in the background, in its slot.
func (p *Pool) discard(proc *process) {
	proc.Kill()
	p.discarded.Add(1)
	p.mu.Lock()
	delete(p.all, proc)
	p.alive--
	p.notifyLocked()
	p.mu.Unlock()
	p.track(func() {
		p.mu.Lock()
		if p.closed || p.alive >= p.cfg.MaxChildren {
			p.mu.Unlock()
			return
		}
		p.alive++
		p.mu.Unlock()
		if proc, err := p.start(p.ctx, proc.class); err == nil {
			p.release(proc)
		} else if !errors.Is(err, ErrClosed) && p.ctx.Err() == nil {
			p.log.Error("cannot replace a starlark child", "error", err)
		}
	})
}

func (p *Pool) isClosed() bool {
	p.mu.Lock()
	defer p.mu.Unlock()
	return p.closed
}

// notifyLocked wakes the calls waiting for a child.
func (p *Pool) notifyLocked() {
	close(p.changed)
	p.changed = make(chan struct{})
}
