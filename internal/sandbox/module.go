package sandbox

import (
	"context"
	"errors"
	"fmt"
	"strings"
	"sync"
	"sync/atomic"
	"time"

	"github.com/tetratelabs/wazero/api"
	"github.com/tetratelabs/wazero/experimental"
	"github.com/tetratelabs/wazero/sys"

	"github.com/hivemind/taskworker/internal/callhost"
	"github.com/hivemind/taskworker/internal/childproc"
)

// Module is one loaded function version: its compiled code and its
// instances (with Config.ChildCommand, child processes holding one each),
// kept by a childproc.Supervisor, at most Spec.Concurrency of them running
// calls at once. It is safe for concurrent use.
type Module struct {
	rt       *Runtime
	spec     Spec
	host     Host
	digest   [32]byte
	compiled *plugin
	logLimit *tokenBucket
	// wasm is the module's bytes, kept to start child processes
	// (Config.ChildCommand); nil when calls run in this process.
	wasm []byte

	sup     *childproc.Supervisor[struct{}, runner]
	running atomic.Int32 // calls running

	// The callers' calls waiting to be sent to a child in a batch, and
	// the goroutines that send them (batch.go).
	bmu     sync.Mutex
	callers map[string]*callerCalls
	drivers sync.WaitGroup

	mu       sync.Mutex
	closed   bool
	inflight sync.WaitGroup

	calls, fromDisk atomic.Uint64
	// remade counts the instances child processes threw away and made
	// again without a process start (a trap, a memory overrun).
	remade atomic.Uint64
	// batched counts the calls sent to a child in a batch of several.
	batched atomic.Uint64
}

// runner runs a Module's calls one at a time: an instance in this process,
// or a child process holding one (Config.ChildCommand).
type runner interface {
	// run makes one call and says whether the runner may serve another.
	run(ctx context.Context, input []byte) (out []byte, keep bool, err error)
	// Kill ends the runner (closes the instance, kills the process), even
	// while it runs a call.
	Kill()
}

// newSupervisor keeps m's runners: with child processes, a spare starts
// when a call takes the last idle one, and a replacement for one killed.
func (m *Module) newSupervisor() {
	noun := "instances of this function"
	if m.wasm != nil {
		noun = "processes of this function"
	}
	m.sup = childproc.NewSupervisor(childproc.SupervisorConfig[struct{}, runner]{
		Start:       func(ctx context.Context, _ struct{}) (runner, error) { return m.newRunner(ctx) },
		MaxChildren: m.spec.Concurrency,
		Spares:      m.wasm != nil,
		Replace:     m.wasm != nil,
		Noun:        noun,
		Logger:      m.rt.logger,
	})
}

// newRunner starts a child process or makes an instance in this one.
func (m *Module) newRunner(ctx context.Context) (runner, error) {
	if m.wasm != nil {
		return m.startChild(ctx)
	}
	return m.newInstance(ctx)
}

// ModuleStats counts a Module's calls and instances.
type ModuleStats struct {
	Calls     uint64 // calls that ran (not those refused before running)
	Created   uint64 // instances created (with ChildCommand: processes started, one instance each, and instances a process made again)
	Discarded uint64 // instances thrown away after a trap, timeout or memory overrun
	Idle      int    // instances waiting for a call
	// Queued counts the calls waiting for a batch (batch.go): a caller's
	// calls beyond those its turns run. Batched counts the calls sent to a
	// child together with others.
	Queued  int
	Batched uint64
	// FromDisk counts the processes that read the module's compiled code
	// from Config.CacheDir rather than compiling it (with ChildCommand).
	FromDisk uint64
}

// instance is one instance of a Module's plugin (extism.go): its kernel and
// guest modules, with the functions a call uses looked up once. It serves
// one call at a time.
type instance struct {
	m      *Module
	budget *memoryBudget
	stderr *headBuffer
	call   callState

	kernel, guest api.Module
	memory        api.Memory     // the kernel's: every block lives there
	kernelFuncs   []api.Function // by index in kernelForwarded
	export        api.Function
	initGuest     func(context.Context) error        // before the first call; nil once run
	inputOffset   uint64                             // the current call's input block
	stopCall      atomic.Pointer[context.CancelFunc] // the running call's, for Kill
	vars          map[string][]byte                  // Extism vars (var_get, var_set)
}

// callState is what host functions know of the call they serve.
type callState struct {
	logLines, logDropped int
	host                 hostCalls
}

// callKey is where host functions find the instance whose call they serve,
// in their ctx.
type callKey struct{}

// Spec returns the module's limits, with the defaults filled in.
func (m *Module) Spec() Spec { return m.spec }

// Stats returns the module's counters.
func (m *Module) Stats() ModuleStats {
	st := m.sup.Stats()
	queued := 0
	m.bmu.Lock()
	for _, cs := range m.callers {
		queued += len(cs.waiting)
	}
	m.bmu.Unlock()
	return ModuleStats{
		Queued:    queued,
		Batched:   m.batched.Load(),
		Calls:     m.calls.Load(),
		Created:   st.Started + m.remade.Load(),
		Discarded: st.Discarded + m.remade.Load(),
		Idle:      st.Idle,
		FromDisk:  m.fromDisk.Load(),
	}
}

// discarded is Stats().Discarded, cheaply: a child reads it around each
// call.
func (m *Module) discarded() uint64 { return m.sup.Discarded() + m.remade.Load() }

// Call runs the module's export with input as the plugin input and returns
// its output. It waits for a free instance as long as ctx allows (ErrBusy
// when it does not), then runs under the module's limits. Errors wrap the
// sentinels of this package (childproc.GRPCStatus turns them into what the
// caller should see); a *GuestError is the function's own error.
func (m *Module) Call(ctx context.Context, input []byte) ([]byte, error) {
	return m.CallFor(ctx, "", input)
}

// CallFor is Call for a caller (the user calling): the module's instances
// are shared fairly between callers (childproc.FairQueue), so that one
// caller's many calls delay only its own. Call is CallFor the empty caller.
func (m *Module) CallFor(ctx context.Context, caller string, input []byte) ([]byte, error) {
	return m.CallThrough(ctx, nil, caller, input)
}

// CallThrough is CallFor for a call that must also pass gate (if not nil)
// before it takes an instance: the worker's bound on the calls of all its
// functions running at once.
//
// With child processes, a caller's calls that wait for their turn while
// the caller's others run are sent to a child together, up to maxBatch at
// a time, when a turn comes: one turn, one pass through gate, one write and
// one wake-up of the child for the batch, which then runs them one after
// another (batch.go).
func (m *Module) CallThrough(ctx context.Context, gate Gate, caller string, input []byte) ([]byte, error) {
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
	m.rt.calls.Add(1)
	defer m.rt.calls.Add(-1)
	if m.wasm == nil || len(input) > maxBatchInput {
		return m.callAlone(ctx, gate, caller, input)
	}
	return m.callBatched(ctx, gate, caller, input)
}

// callAlone runs one call on a runner of its own, once its turn (through
// gate, then the module's) comes.
func (m *Module) callAlone(ctx context.Context, gate Gate, caller string, input []byte) ([]byte, error) {
	r, err := m.turn(ctx, gate, caller)
	if err != nil {
		return nil, err
	}
	if gate != nil {
		defer gate.Release(caller)
	}
	if ctx.Err() != nil {
		m.sup.Release(r)
		return nil, notStarted(ctx)
	}
	m.calls.Add(1)
	m.running.Add(1)
	defer m.running.Add(-1)
	out, keep, err := r.run(ctx, input)
	for attempt := 1; retry(err) && attempt < maxAttempts; attempt++ {
		// Nothing ran: run on another runner. The instance's last call
		// exited (WASI proc_exit(0), which looks like success) and
		// closed it, or the process died while idle.
		m.sup.Discard(r)
		if r, err = m.acquire(ctx, caller); err != nil {
			return nil, err
		}
		out, keep, err = r.run(ctx, input)
	}
	if keep {
		m.sup.Release(r)
	} else {
		m.sup.Discard(r)
	}
	return out, err
}

// maxAttempts bounds the runners a call is tried on when it did not run.
const maxAttempts = 3

// retry reports whether a runner's error says the call did not run, so
// that running it on another runner is safe.
func retry(err error) bool {
	var ce *childproc.CallError
	return errors.Is(err, errExited) || errors.As(err, &ce) && ce.NotSent()
}

// notStarted is the error of a call whose caller's context ended before
// the call started.
func notStarted(ctx context.Context) error {
	if errors.Is(ctx.Err(), context.Canceled) {
		return fmt.Errorf("%w before the function started: %w", ErrCanceled, ctx.Err())
	}
	return fmt.Errorf("%w: the caller's deadline had passed before the function started: give the call more time", ErrTimeout)
}

// turn waits for a call's turn: through gate, then a runner of the
// module's. The caller releases both.
func (m *Module) turn(ctx context.Context, gate Gate, caller string) (runner, error) {
	if gate != nil {
		if err := gate.Acquire(ctx, caller); err != nil {
			return nil, err
		}
	}
	r, err := m.acquire(ctx, caller)
	if err != nil && gate != nil {
		gate.Release(caller)
	}
	return r, err
}

// acquire takes an idle runner, makes one, or waits for one.
func (m *Module) acquire(ctx context.Context, caller string) (runner, error) {
	r, err := m.sup.Acquire(ctx, caller, struct{}{})
	switch {
	case err == nil:
		return r, nil
	case errors.Is(err, childproc.ErrClosed):
		return nil, fmt.Errorf("function: %w", ErrClosed)
	case errors.Is(err, ErrBusy), errors.Is(err, ErrTrap),
		// A start-up's own limits, as a call's would be (instance.start).
		errors.Is(err, ErrTimeout), errors.Is(err, ErrMemoryLimit), errors.Is(err, ErrCanceled):
		return nil, err
	}
	// Load made an instance of this module: starting another failed only
	// for a reason of this call's, such as its context.
	return nil, fmt.Errorf("%w: starting an instance: %v", ErrTrap, err)
}

// newInstance instantiates the module with a fresh memory budget.
func (m *Module) newInstance(ctx context.Context) (*instance, error) {
	inst := &instance{
		m:      m,
		budget: newMemoryBudget(m.spec.Memory),
		stderr: &headBuffer{max: 512},
	}
	ictx := experimental.WithMemoryAllocator(ctx, inst.budget)
	if err := m.compiled.instantiate(ictx, inst, moduleConfig().WithStderr(inst.stderr)); err != nil {
		return nil, fmt.Errorf("%w: instantiating: %v", ErrInvalidModule, err)
	}
	if inst.budget.refused.Load() {
		inst.Kill()
		return nil, fmt.Errorf("%w: the module needs more than its memory limit of %s as soon as it starts: deploy it with more memory",
			ErrMemoryLimit, formatBytes(m.spec.Memory))
	}
	// In a child, the parent asks for the start-up once the process is
	// confined (frameStart), and stops it at its time limit; here, the
	// time limit holds (WithCloseOnContextDone).
	if !m.rt.cfg.noCloseOnContextDone {
		if err := inst.start(ctx); err != nil {
			inst.Kill()
			return nil, err
		}
	}
	return inst, nil
}

// startIdle starts the idle instances whose start-up has not run: in a
// child, at the parent's frameStart.
func (m *Module) startIdle(ctx context.Context) error {
	for _, r := range m.sup.Children() {
		if inst, ok := r.(*instance); ok {
			if err := inst.start(ctx); err != nil {
				return err
			}
		}
	}
	return nil
}

// start runs the guest's start-up, once: its runtime's and its globals'
// initialization (guestInit), which the Go guest SDK's functions are
// registered in and which takes a Go guest milliseconds. It runs when the
// instance is made, before and outside any call, so that a call does not
// wait for it: under the function's time limit and memory budget, with its
// log lines the function's, but reaching nothing outside (startupHost).
// A start-up that fails fails the instance: at Load, the deploy.
func (inst *instance) start(ctx context.Context) error {
	if inst.initGuest == nil {
		return nil
	}
	startCtx, cancel := inst.begin(ctx)
	defer inst.end(ctx, cancel)
	start := time.Now()
	err := inst.initGuest(callhost.With(startCtx, startupHost{}))
	inst.initGuest = nil
	if stopped := inst.stopped(ctx, startCtx, start, startUp); stopped != nil || err == nil {
		return stopped
	}
	if exit := (*sys.ExitError)(nil); errors.As(err, &exit) {
		return fmt.Errorf("%w: %s exited with code %d%s", ErrTrap, startUp, exit.ExitCode(), inst.stderr.suffix())
	}
	return fmt.Errorf("%w: %s failed: %s%s", ErrTrap, startUp, firstLine(err.Error()), inst.stderr.suffix())
}

// startUp names a guest's start-up in its errors.
const startUp = "the function's start-up (before its first call)"

// begin prepares inst to run guest code for ctx: under the function's time
// limit, stopped by Kill, with a fresh call state (log lines, host
// requests), the instance in the context for the host functions. end
// undoes it, with begin's cancel, once the guest code has returned.
//
// Without deadline checks in the compiled code (in a child, whose parent
// kills it at the time limit), a timer would stop nothing: the context is
// then only Kill's to cancel, and costs a call no timer.
func (inst *instance) begin(ctx context.Context) (context.Context, context.CancelFunc) {
	var limitCtx context.Context
	var cancel context.CancelFunc
	if inst.m.rt.cfg.noCloseOnContextDone {
		limitCtx, cancel = context.WithCancel(ctx)
	} else {
		limitCtx, cancel = context.WithTimeout(ctx, inst.m.spec.Timeout)
	}
	inst.stopCall.Store(&cancel)
	inst.call = callState{}
	inst.stderr.reset()
	return context.WithValue(limitCtx, callKey{}, inst), cancel
}

func (inst *instance) end(ctx context.Context, cancel context.CancelFunc) {
	inst.stopCall.Store(nil)
	cancel()
	if m := inst.m; inst.call.logDropped > 0 {
		m.rt.logger.WarnContext(ctx, "sandbox: dropped guest log lines over the limit", "export", m.spec.Export, "dropped", inst.call.logDropped)
	}
}

// stopped says which of its limits stopped guest code (what: the function,
// or its start-up) that ran for ctx under limitCtx from start: its memory,
// Close, the caller's cancel or deadline, its time limit; or nil.
func (inst *instance) stopped(ctx, limitCtx context.Context, start time.Time, what string) error {
	m := inst.m
	switch {
	case inst.budget.refused.Load():
		return fmt.Errorf("%w: %s tried to use more than its %s of memory and was stopped%s: use less memory, or deploy it with more",
			ErrMemoryLimit, what, formatBytes(m.spec.Memory), inst.stderr.suffix())
	case limitCtx.Err() == nil:
		return nil
	case m.closing():
		return fmt.Errorf("%w: the function was stopped by Close: it was undeployed or the worker is stopping", ErrClosed)
	case errors.Is(ctx.Err(), context.Canceled):
		return fmt.Errorf("%w after %s: %w", ErrCanceled, time.Since(start).Round(time.Millisecond), ctx.Err())
	case ctx.Err() != nil && childproc.CallerFirst(ctx, start, m.spec.Timeout):
		return fmt.Errorf("%w: the caller's deadline passed after %s, before %s finished: give the call more time",
			ErrTimeout, time.Since(start).Round(time.Millisecond), what)
	}
	return fmt.Errorf("%w: %s ran past its time limit of %s and was stopped: make it faster, or deploy it with a longer timeout",
		ErrTimeout, what, m.spec.Timeout)
}

// Kill ends the instance. A call running in it is stopped through its
// context, at its next deadline check (closing the modules under a running
// call would free its memory under it); the Module then discards the
// instance, and this closes it.
func (inst *instance) Kill() {
	if stop := inst.stopCall.Load(); stop != nil {
		(*stop)()
		return
	}
	ctx := context.Background()
	_ = inst.guest.Close(ctx)
	_ = inst.kernel.Close(ctx)
}

// run makes one call on inst, and says whether inst may serve another.
func (inst *instance) run(ctx context.Context, input []byte) (out []byte, keep bool, err error) {
	m := inst.m
	callCtx, cancel := inst.begin(ctx)
	defer inst.end(ctx, cancel)
	start := time.Now()

	rc, out, guestErr, err := inst.callGuest(callCtx, input)

	if err == errExited {
		return nil, false, err
	}
	outgrown := inst.budget.refused.Load()
	if err == nil && rc == 0 && guestErr == "" {
		if len(out) > m.spec.MaxOutput {
			return nil, !outgrown, fmt.Errorf("%w: the function returned %d bytes, over its limit of %s: return less, or deploy it with a higher output limit",
				ErrOutputTooLarge, len(out), formatBytes(int64(m.spec.MaxOutput)))
		}
		// A guest that survived a refused grow is near its limit: let
		// the next call start afresh.
		return out, !outgrown, nil
	}
	if stopped := inst.stopped(ctx, callCtx, start, "the function"); stopped != nil {
		return nil, false, stopped
	}
	if err == nil {
		// The guest returned normally.
		if guestErr == "" {
			guestErr = fmt.Sprintf("the function failed with code %d and no message", rc)
		}
		return nil, true, &GuestError{Message: guestErr}
	}
	if m.closing() {
		return nil, false, fmt.Errorf("%w: the function was stopped by Close: it was undeployed or the worker is stopping", ErrClosed)
	}
	if exit := (*sys.ExitError)(nil); errors.As(err, &exit) {
		return nil, false, fmt.Errorf("%w: the function exited with code %d%s", ErrTrap, exit.ExitCode(), inst.stderr.suffix())
	}
	return nil, false, fmt.Errorf("%w: %s%s", ErrTrap, firstLine(err.Error()), inst.stderr.suffix())
}

// closing reports whether the Module's Supervisor was closed.
func (m *Module) closing() bool {
	select {
	case <-m.sup.Done():
		return true
	default:
		return false
	}
}

// Close stops new calls, lets calls in flight finish until ctx ends, then
// ends every instance (with child processes, kills them) and releases the
// compiled code.
func (m *Module) Close(ctx context.Context) error {
	m.mu.Lock()
	if m.closed {
		m.mu.Unlock()
		return nil
	}
	m.closed = true
	m.mu.Unlock()
	drained := make(chan struct{})
	go func() {
		m.inflight.Wait()
		close(drained)
	}()
	select {
	case <-drained:
	case <-ctx.Done():
	}
	m.sup.Close() // ends the calls still running
	<-drained
	m.drivers.Wait()
	return m.closeCompiled(context.WithoutCancel(ctx))
}

func (m *Module) closeCompiled(ctx context.Context) error {
	defer m.rt.forget(m)
	return m.compiled.close(ctx)
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
