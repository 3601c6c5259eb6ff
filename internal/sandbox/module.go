package sandbox

import (
	"context"
	"errors"
	"fmt"
	"strings"
	"sync"
	"sync/atomic"
	"time"

	extism "github.com/extism/go-sdk"
	"github.com/tetratelabs/wazero/experimental"
	"github.com/tetratelabs/wazero/sys"
)

// Module is one loaded function version: its compiled code and a pool of
// instances, at most Spec.Concurrency of them running calls at once. It is
// safe for concurrent use.
type Module struct {
	rt       *Runtime
	spec     Spec
	host     Host
	digest   [32]byte
	compiled *extism.CompiledPlugin
	logLimit *tokenBucket
	// wasm is the module's bytes, kept to start child processes
	// (Config.ChildCommand); nil when calls run in this process.
	wasm []byte

	// slots holds a token per running call: its capacity is the
	// concurrency limit.
	slots chan struct{}
	done  chan struct{} // closed by Close

	mu       sync.Mutex
	idle     []runner // last in, first out: the warmest first
	children map[*child]struct{}
	starting int // spare children being started
	closed   bool
	inflight sync.WaitGroup
	procs    sync.WaitGroup // the goroutines that wait for children to exit

	calls, created, discarded, fromDisk atomic.Uint64
}

// ModuleStats counts a Module's calls and instances.
type ModuleStats struct {
	Calls     uint64 // calls that ran (not those refused before running)
	Created   uint64 // instances created (with ChildCommand: processes started, one instance each)
	Discarded uint64 // instances thrown away after a trap, timeout or memory overrun
	Idle      int    // instances waiting for a call
	// FromDisk counts the processes that read the module's compiled code
	// from Config.CacheDir rather than compiling it (with ChildCommand).
	FromDisk uint64
}

// instance is one Extism plugin instance: a Plugin is not safe for
// concurrent use, so an instance serves one call at a time.
type instance struct {
	m      *Module
	plugin *extism.Plugin
	budget *memoryBudget
	stderr *headBuffer
	call   callState
}

// callState is what host functions know of the call they serve; they find
// it in their ctx under callKey.
type callState struct {
	logLines, logDropped int
}

type callKey struct{}

// Spec returns the module's limits, with the defaults filled in.
func (m *Module) Spec() Spec { return m.spec }

// Stats returns the module's counters.
func (m *Module) Stats() ModuleStats {
	m.mu.Lock()
	idle := len(m.idle)
	m.mu.Unlock()
	return ModuleStats{
		Calls:     m.calls.Load(),
		Created:   m.created.Load(),
		Discarded: m.discarded.Load(),
		Idle:      idle,
		FromDisk:  m.fromDisk.Load(),
	}
}

// Call runs the module's export with input as the plugin input and returns
// its output. It waits for a free instance as long as ctx allows (ErrBusy
// when it does not), then runs under the module's limits. Errors wrap the
// sentinels of this package (GRPCStatus turns them into what the caller
// should see); a *GuestError is the function's own error.
func (m *Module) Call(ctx context.Context, input []byte) ([]byte, error) {
	if len(input) > m.spec.MaxInput {
		return nil, fmt.Errorf("%w: the input is %d bytes, over this function's limit of %s: send less",
			ErrInputTooLarge, len(input), formatBytes(int64(m.spec.MaxInput)))
	}
	m.mu.Lock()
	if m.closed {
		m.mu.Unlock()
		return nil, fmt.Errorf("function: %w", ErrClosed)
	}
	m.inflight.Add(1)
	m.mu.Unlock()
	defer m.inflight.Done()

	if err := m.acquire(ctx); err != nil {
		return nil, err
	}
	defer func() { <-m.slots }()
	switch {
	case errors.Is(ctx.Err(), context.Canceled):
		return nil, fmt.Errorf("%w before the function started: %w", ErrCanceled, ctx.Err())
	case ctx.Err() != nil:
		return nil, fmt.Errorf("%w: the caller's deadline had passed before the function started: give the call more time", ErrTimeout)
	}

	r, err := m.take(ctx)
	if err != nil {
		return nil, err
	}
	m.calls.Add(1)
	out, keep, err := r.run(ctx, input)
	for errors.Is(err, errExited) {
		// The instance's last call exited (WASI proc_exit(0), which
		// looks like success) and closed it; nothing ran: run on
		// another. A new instance is never closed, so this ends.
		m.put(ctx, r, false)
		if r, err = m.take(ctx); err != nil {
			return nil, err
		}
		out, keep, err = r.run(ctx, input)
	}
	m.put(ctx, r, keep)
	return out, err
}

// errExited is run's report that the instance was closed before the call:
// go-sdk's Plugin.CallWithContext says only "module is closed".
var errExited = errors.New("module is closed")

// acquire takes a slot, waiting while every instance is busy.
func (m *Module) acquire(ctx context.Context) error {
	select {
	case m.slots <- struct{}{}:
		return nil
	default:
	}
	select {
	case m.slots <- struct{}{}:
		return nil
	case <-m.done:
		return fmt.Errorf("function: %w", ErrClosed)
	case <-ctx.Done():
		return fmt.Errorf("%w: all %d instances of this function stayed busy until the caller's context ended (%v): retry later, or deploy it with a higher concurrency",
			ErrBusy, m.spec.Concurrency, ctx.Err())
	}
}

// take returns an idle runner or makes one.
func (m *Module) take(ctx context.Context) (runner, error) {
	m.mu.Lock()
	if n := len(m.idle); n > 0 {
		r := m.idle[n-1]
		m.idle = m.idle[:n-1]
		m.mu.Unlock()
		if n == 1 && m.wasm != nil {
			m.startSpare() // so that the next call finds a process ready
		}
		return r, nil
	}
	m.mu.Unlock()
	r, err := m.newRunner(ctx)
	if err != nil {
		select {
		case <-m.done:
			return nil, fmt.Errorf("function: %w", ErrClosed)
		default:
		}
		// Load made an instance of this module: starting another failed
		// only for a reason of this call's, such as its context.
		if errors.Is(err, ErrTrap) {
			return nil, err
		}
		return nil, fmt.Errorf("%w: starting an instance: %v", ErrTrap, err)
	}
	return r, nil
}

// newRunner starts a child process or makes an instance in this one.
func (m *Module) newRunner(ctx context.Context) (runner, error) {
	if m.wasm != nil {
		return m.startChild(ctx)
	}
	return m.newInstance(ctx)
}

// put returns a runner to the pool, or closes it.
func (m *Module) put(ctx context.Context, r runner, keep bool) {
	if keep {
		m.mu.Lock()
		// Processes past Spec.Concurrency (a spare and a call's own start
		// that raced) are not kept.
		_, isChild := r.(*child)
		if !m.closed && !(isChild && len(m.children) > m.spec.Concurrency) {
			m.idle = append(m.idle, r)
			m.mu.Unlock()
			return
		}
		m.mu.Unlock()
	} else {
		m.discarded.Add(1)
	}
	r.close(context.WithoutCancel(ctx))
	if _, ok := r.(*child); ok && !keep {
		m.startSpare()
	}
}

// newInstance instantiates the module with a fresh memory budget.
func (m *Module) newInstance(ctx context.Context) (*instance, error) {
	inst := &instance{
		m:      m,
		budget: newMemoryBudget(m.spec.MemoryLimit),
		stderr: &headBuffer{max: 512},
	}
	ictx := experimental.WithMemoryAllocator(ctx, inst.budget)
	plugin, err := m.compiled.Instance(ictx, extism.PluginInstanceConfig{
		ModuleConfig: moduleConfig().WithStderr(inst.stderr),
	})
	if err != nil {
		return nil, fmt.Errorf("%w: instantiating: %v", ErrInvalidModule, err)
	}
	if inst.budget.refused.Load() {
		_ = plugin.Close(ctx)
		return nil, fmt.Errorf("%w: the module needs more than its memory limit of %s as soon as it starts: deploy it with more memory",
			ErrMemoryLimit, formatBytes(m.spec.MemoryLimit))
	}
	cacheLookups(plugin)
	inst.plugin = plugin
	m.created.Add(1)
	return inst, nil
}

func (inst *instance) close(ctx context.Context) { _ = inst.plugin.Close(ctx) }

// run makes one call on inst, and says whether inst may serve another.
func (inst *instance) run(ctx context.Context, input []byte) (out []byte, keep bool, err error) {
	m := inst.m
	callCtx, cancel := context.WithTimeout(ctx, m.spec.Timeout)
	defer cancel()
	inst.call = callState{}
	inst.stderr.reset()
	callCtx = context.WithValue(callCtx, callKey{}, &inst.call)
	start := time.Now()

	rc, out, err := inst.plugin.CallWithContext(callCtx, m.spec.Export, input)

	if inst.call.logDropped > 0 {
		m.rt.logger.WarnContext(ctx, "sandbox: dropped guest log lines over the limit",
			"export", m.spec.Export, "dropped", inst.call.logDropped)
	}
	if err != nil && err.Error() == errExited.Error() {
		return nil, false, errExited
	}
	outgrown := inst.budget.refused.Load()
	switch {
	case err == nil && rc == 0:
		if len(out) > m.spec.MaxOutput {
			return nil, !outgrown, fmt.Errorf("%w: the function returned %d bytes, over its limit of %s: return less, or deploy it with a higher output limit",
				ErrOutputTooLarge, len(out), formatBytes(int64(m.spec.MaxOutput)))
		}
		// A guest that survived a refused grow is near its limit: let
		// the next call start afresh.
		return out, !outgrown, nil
	case outgrown:
		return nil, false, fmt.Errorf("%w: the function tried to use more than its %s of memory and was stopped%s: use less memory, or deploy it with more",
			ErrMemoryLimit, formatBytes(m.spec.MemoryLimit), inst.stderr.suffix())
	case callCtx.Err() != nil:
		if errors.Is(ctx.Err(), context.Canceled) {
			return nil, false, fmt.Errorf("%w after %s: %w", ErrCanceled, time.Since(start).Round(time.Millisecond), ctx.Err())
		}
		if ctx.Err() != nil && m.callerFirst(ctx, start) {
			return nil, false, fmt.Errorf("%w: the caller's deadline passed after %s, before the function finished: give the call more time",
				ErrTimeout, time.Since(start).Round(time.Millisecond))
		}
		return nil, false, fmt.Errorf("%w: the function ran past its time limit of %s and was stopped: make it faster, or deploy it with a longer timeout",
			ErrTimeout, m.spec.Timeout)
	}
	if err == nil {
		return nil, true, &GuestError{Message: fmt.Sprintf("the function failed with code %d and no message", rc)}
	}
	if msg := inst.plugin.GetError(); msg != "" && msg == err.Error() {
		// The guest set this error and returned normally.
		return nil, true, &GuestError{Message: msg}
	}
	select {
	case <-m.done:
		return nil, false, fmt.Errorf("%w: the function was stopped by Close: it was undeployed or the worker is stopping", ErrClosed)
	default:
	}
	if exit := (*sys.ExitError)(nil); errors.As(err, &exit) {
		return nil, false, fmt.Errorf("%w: the function exited with code %d%s", ErrTrap, exit.ExitCode(), inst.stderr.suffix())
	}
	return nil, false, fmt.Errorf("%w: %s%s", ErrTrap, firstLine(err.Error()), inst.stderr.suffix())
}

// callerFirst reports whether the caller's deadline, not the module's
// timeout, ended the call started at start.
func (m *Module) callerFirst(ctx context.Context, start time.Time) bool {
	deadline, ok := ctx.Deadline()
	return ok && deadline.Before(start.Add(m.spec.Timeout))
}

// Close stops new calls, lets calls in flight finish until ctx ends, then
// closes every instance and the compiled code (ending whatever still runs).
func (m *Module) Close(ctx context.Context) error {
	m.mu.Lock()
	if m.closed {
		m.mu.Unlock()
		return nil
	}
	m.closed = true
	close(m.done)
	idle := m.idle
	m.idle = nil
	m.mu.Unlock()
	for _, r := range idle {
		r.close(ctx)
	}

	drained := make(chan struct{})
	go func() {
		m.inflight.Wait()
		close(drained)
	}()
	select {
	case <-drained:
	case <-ctx.Done():
	}
	// Closing the compiled plugin closes its wazero runtime, which stops
	// any call still running at its next check; child processes are
	// killed.
	err := m.closeCompiled(context.WithoutCancel(ctx))
	m.mu.Lock()
	for c := range m.children {
		c.proc.Kill()
	}
	m.mu.Unlock()
	<-drained
	m.procs.Wait()
	return err
}

func (m *Module) closeCompiled(ctx context.Context) error {
	defer m.rt.forget(m)
	return m.compiled.Close(ctx)
}

// firstLine cuts wazero's error at its stack trace.
func firstLine(s string) string {
	if i := strings.IndexByte(s, '\n'); i >= 0 {
		s = s[:i]
	}
	return s
}

// headBuffer keeps the first max bytes written to it: a guest's stderr, for
// the message of a crash. A Go guest's "panic:" or "fatal error:" line comes
// first, before the goroutine dump.
type headBuffer struct {
	max int
	buf []byte
}

func (h *headBuffer) Write(p []byte) (int, error) {
	if room := h.max - len(h.buf); room > 0 {
		h.buf = append(h.buf, p[:min(room, len(p))]...)
	}
	return len(p), nil
}

func (h *headBuffer) reset() { h.buf = h.buf[:0] }

// suffix is the first lines of stderr for an error message, or "".
func (h *headBuffer) suffix() string {
	var lines []string
	for line := range strings.Lines(string(h.buf)) {
		if line = strings.TrimSpace(line); line != "" {
			lines = append(lines, line)
		}
		if len(lines) == 2 {
			break
		}
	}
	if len(lines) == 0 {
		return ""
	}
	return " (stderr: " + strings.Join(lines, "; ") + ")"
}
