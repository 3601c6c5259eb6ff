// Package deployed runs deployed functions on a worker: it implements the
// worker's Sandbox over the WebAssembly runtime (package sandbox), keeping
// one loaded module per deployed version, and checks modules for the pool
// at deploy time.
//
// Calls are shared fairly between the calling users (the worker passes the
// request's user): the WebAssembly calls of all functions take a turn in one
// childproc.FairQueue (Config.MaxWasmCalls, at most MaxWasmCallsPerCaller
// per user), then an instance of their function, shared fairly too; the
// Starlark calls share the worker's Starlark children the same way.
//
// # Caveats
//
// A loaded version stays loaded while it is called: one not called for
// Config.ModuleIdleTimeout is unloaded, its processes stopped, and when the
// loaded versions' memory (an estimate: see Config.MaxModuleMemory) is
// over its bound, those least recently called are unloaded first. A
// version being called is never unloaded, so calls in flight can hold
// more. The next call of an unloaded version loads it again, from the
// compiled-code cache on disk.
//
// Starlark scripts share the worker's pool of child processes
// (Config.Starlark), so a deployment's concurrency limit does not apply to
// them; the pool's MaxChildren does, shared fairly by the calling users.
// Their idle children stay until another class of call needs their room.
package deployed

import (
	"context"
	"log/slog"
	"maps"
	"slices"
	"sync"
	"time"

	"google.golang.org/grpc/codes"
	"google.golang.org/grpc/status"

	v1 "github.com/hivemind/taskworker/api/taskworker/v1"
	"github.com/hivemind/taskworker/internal/childproc"
	"github.com/hivemind/taskworker/internal/sandbox"
	"github.com/hivemind/taskworker/internal/starlarkrun"
	"github.com/hivemind/taskworker/internal/worker"
)

// Runner runs deployed functions. It implements worker.Sandbox.
type Runner struct {
	cfg  Config
	wasm *sandbox.Runtime
	star *starlarkrun.Pool // nil: no Starlark
	log  *slog.Logger

	// wasmCalls shares the worker's WebAssembly calls, of every function,
	// fairly between the calling users.
	wasmCalls *childproc.FairQueue

	mu       sync.Mutex
	loading  map[loadKey]*load
	unloaded uint64

	stop      chan struct{} // closed by Close: the idle sweep ends
	stopOnce  sync.Once
	unloading sync.WaitGroup
}

// loadKey is what makes a loaded module: its bytes and its limits.
type loadKey struct {
	sha  string
	spec sandbox.Spec
}

var _ worker.Sandbox = (*Runner)(nil)

// load is one deployed version's module, loaded once.
type load struct {
	done chan struct{}
	mod  *sandbox.Module
	err  error
	sha  string
	size int64 // the module's bytes

	// Under Runner.mu.
	calls    int       // calls that hold the module now
	lastUsed time.Time // when the last call ended
}

// Config configures a Runner.
type Config struct {
	// CacheDir keeps compiled WebAssembly across restarts (empty: in memory
	// only).
	CacheDir string
	// StarlarkCommand starts a Starlark child process: this binary and
	// starlarkrun.ChildArg. Empty: the worker runs no Starlark.
	StarlarkCommand []string
	// WasmCommand starts a WebAssembly child process: this binary and
	// sandbox.ChildArg (sandbox.Config.ChildCommand). Empty: WebAssembly
	// runs in the worker's process, stopped by deadline checks.
	WasmCommand []string
	// AllowUnconfined lets child processes run function code without
	// their seccomp filter where they cannot install it (the worker's
	// --allow-unconfined); New then logs a warning. False: they refuse,
	// and calls fail with FailedPrecondition saying why.
	AllowUnconfined bool
	// MaxModuleMemory bounds the memory of the WebAssembly versions loaded
	// on the worker and not being called, as estimated: for each,
	// compiledFactor times its module's size (the bytes, the compiled
	// code) and its memory limit for each of its instances (or processes)
	// alive. Past it, the versions least recently called are unloaded.
	// Zero: DefaultMaxModuleMemory.
	MaxModuleMemory int64
	// ModuleIdleTimeout unloads a version not called for this long, and
	// stops its processes. Zero: DefaultModuleIdleTimeout; negative: never.
	ModuleIdleTimeout time.Duration
	// MaxWasmCalls bounds the WebAssembly calls running at once on the
	// worker, of all functions (each function's own Concurrency bounds its
	// calls too). They are shared fairly between the calling users
	// (childproc.FairQueue), each holding at most MaxWasmCallsPerCaller.
	// Zero: DefaultMaxWasmCalls.
	MaxWasmCalls int
	// MaxWasmCallsPerCaller: zero is childproc.DefaultPerTenant(MaxWasmCalls),
	// all but one and no more than the CPUs.
	MaxWasmCallsPerCaller int
	// MaxStarlarkChildren bounds the Starlark child processes, which are
	// also the Starlark calls running at once; MaxStarlarkChildrenPerCaller
	// bounds one calling user's (starlarkrun.Config.MaxChildren and
	// MaxChildrenPerCaller). Zero: starlarkrun's defaults.
	MaxStarlarkChildren          int
	MaxStarlarkChildrenPerCaller int
	// StarlarkIdleAfter is how long a Starlark call computes before it
	// drops to the idle CPU class (starlarkrun.Config.IdleAfter). Zero:
	// starlarkrun's default; negative: never.
	StarlarkIdleAfter time.Duration
	Logger            *slog.Logger
}

// The defaults of Config.
const (
	DefaultMaxModuleMemory   = 2 << 30
	DefaultModuleIdleTimeout = 10 * time.Minute
	DefaultMaxWasmCalls      = 64
)

// compiledFactor is the memory a loaded module's bytes stand for: the
// bytes themselves, kept to start processes, and the compiled code (a few
// times the bytes).
const compiledFactor = 4

// New returns a runner.
func New(ctx context.Context, c Config) (*Runner, error) {
	log := c.Logger
	if log == nil {
		log = slog.New(slog.DiscardHandler)
	}
	cfg := sandbox.DefaultConfig()
	cfg.CacheDir = c.CacheDir
	cfg.ChildCommand = c.WasmCommand
	cfg.AllowUnconfined = c.AllowUnconfined
	cfg.Logger = log
	if c.AllowUnconfined {
		log.Warn("--allow-unconfined: where a child process cannot install its seccomp filter, " +
			"function code runs without it, behind its rlimits and, where the system allows, namespaces")
	}
	rt, err := sandbox.NewRuntime(ctx, cfg)
	if err != nil {
		return nil, err
	}
	if c.MaxModuleMemory == 0 {
		c.MaxModuleMemory = DefaultMaxModuleMemory
	}
	if c.ModuleIdleTimeout == 0 {
		c.ModuleIdleTimeout = DefaultModuleIdleTimeout
	}
	if c.MaxWasmCalls == 0 {
		c.MaxWasmCalls = DefaultMaxWasmCalls
	}
	r := &Runner{cfg: c, wasm: rt, log: log, loading: map[loadKey]*load{}, stop: make(chan struct{}),
		wasmCalls: childproc.NewFairQueue(childproc.FairConfig{
			Slots: c.MaxWasmCalls, PerTenant: c.MaxWasmCallsPerCaller, Noun: "WebAssembly calls on this worker",
		})}
	if len(c.StarlarkCommand) > 0 {
		scfg := starlarkrun.DefaultConfig()
		scfg.Command = c.StarlarkCommand
		scfg.AllowUnconfined = c.AllowUnconfined
		scfg.Logger = log
		if c.MaxStarlarkChildren > 0 {
			scfg.MaxChildren = c.MaxStarlarkChildren
			scfg.WarmChildren = min(scfg.WarmChildren, scfg.MaxChildren)
		}
		scfg.MaxChildrenPerCaller = c.MaxStarlarkChildrenPerCaller
		if c.StarlarkIdleAfter != 0 {
			scfg.IdleAfter = c.StarlarkIdleAfter
		}
		if r.star, err = starlarkrun.New(scfg); err != nil {
			rt.Close(ctx)
			return nil, err
		}
	}
	if c.ModuleIdleTimeout > 0 {
		r.unloading.Go(r.sweepIdle)
	}
	return r, nil
}

// Close unloads everything and stops the Starlark children.
func (r *Runner) Close(ctx context.Context) error {
	r.stopOnce.Do(func() { close(r.stop) })
	r.unloading.Wait()
	r.wasmCalls.Close()
	if r.star != nil {
		r.star.Close()
	}
	return r.wasm.Close(ctx)
}

// WasmCalls returns the counts of the WebAssembly calls' FairQueue, with
// the calls queued for a batch (sandbox.ModuleStats.Queued) among those
// waiting.
func (r *Runner) WasmCalls() childproc.FairStats {
	st := r.wasmCalls.Stats()
	r.mu.Lock()
	defer r.mu.Unlock()
	for _, l := range r.loading {
		select {
		case <-l.done:
			if l.err == nil {
				st.Waiting += l.mod.Stats().Queued
			}
		default:
		}
	}
	return st
}

// Unloaded counts the versions unloaded because they were idle or memory
// was short.
func (r *Runner) Unloaded() uint64 {
	r.mu.Lock()
	defer r.mu.Unlock()
	return r.unloaded
}

// Stats reports the runtime's compile and cache counters.
func (r *Runner) Stats() sandbox.RuntimeStats { return r.wasm.Stats() }

// Runtimes implements worker.Sandbox.
func (r *Runner) Runtimes() []v1.Runtime {
	if r.star != nil {
		return []v1.Runtime{v1.Runtime_RUNTIME_WASM, v1.Runtime_RUNTIME_STARLARK}
	}
	return []v1.Runtime{v1.Runtime_RUNTIME_WASM}
}

// Compiled implements worker.Sandbox: the modules loaded and ready.
func (r *Runner) Compiled() []string {
	r.mu.Lock()
	defer r.mu.Unlock()
	set := map[string]bool{}
	for _, l := range r.loading {
		select {
		case <-l.done:
			if l.err == nil {
				set[l.sha] = true
			}
		default:
		}
	}
	return slices.Sorted(maps.Keys(set))
}

// Call implements worker.Sandbox.
func (r *Runner) Call(ctx context.Context, caller string, d *v1.Deployment, args []byte, modules worker.ModuleSource) ([]byte, error) {
	switch {
	case d.Runtime == v1.Runtime_RUNTIME_STARLARK && r.star != nil:
		return r.callStarlark(ctx, caller, d, args, modules)
	case d.Runtime != v1.Runtime_RUNTIME_WASM:
		return nil, status.Errorf(codes.Unimplemented, "%s: this worker does not run %s functions", d.Name, d.Runtime)
	}
	l, err := r.module(ctx, d, modules)
	if err != nil {
		return nil, err
	}
	defer r.done(l)
	// The plugin's input is the call's arguments as the caller sent them
	// (docs/ABI.md, "Arguments and results"); the call takes a turn among
	// the worker's WebAssembly calls, then among the function's.
	out, err := l.mod.CallThrough(ctx, r.wasmCalls, caller, args)
	if err != nil {
		st := childproc.GRPCStatus(err)
		return nil, status.Errorf(st.Code(), "%s v%d: %s", d.Name, d.Version, st.Message())
	}
	return out, nil
}

// callStarlark runs a call of a Starlark function in a child process.
// Scripts are cached by the children, keyed by their hash.
func (r *Runner) callStarlark(ctx context.Context, caller string, d *v1.Deployment, args []byte, modules worker.ModuleSource) ([]byte, error) {
	source, err := modules(ctx, d.ModuleSha256)
	if err != nil {
		return nil, status.Errorf(codes.Unavailable, "%s v%d: fetching its script: %v", d.Name, d.Version, err)
	}
	out, err := r.star.Call(ctx, starlarkrun.Request{
		Name:     d.Name + ".star",
		Source:   source,
		Function: d.Export,
		Args:     args,
		Limits:   limits(d.GetLimits()),
		Tenant:   d.Owner,
		Caller:   caller,
		Host:     sandbox.SlogHost{Logger: r.log.With("function", d.Name, "version", d.Version)},
	})
	if err != nil {
		st := childproc.GRPCStatus(err)
		return nil, status.Errorf(st.Code(), "%s v%d: %s", d.Name, d.Version, st.Message())
	}
	return out, nil
}

// limits turns a deployment's limits into a call's, for either runner.
func limits(l *v1.Limits) childproc.Limits {
	return childproc.Limits{
		Timeout:   time.Duration(l.GetTimeoutMs()) * time.Millisecond,
		Memory:    l.GetMemoryBytes(),
		MaxInput:  int(l.GetMaxInputBytes()),
		MaxOutput: int(l.GetMaxOutputBytes()),
	}
}

// spec turns a deployment's limits into the sandbox's.
func spec(d *v1.Deployment) sandbox.Spec {
	l := d.GetLimits()
	return sandbox.Spec{Export: d.Export, Concurrency: int(l.GetConcurrency()), Limits: limits(l)}
}

// module returns the loaded module of a deployed version, loading it (once,
// however many calls wait for it) on first use, and counts the call as
// holding it until done.
func (r *Runner) module(ctx context.Context, d *v1.Deployment, modules worker.ModuleSource) (*load, error) {
	sp := spec(d)
	key := loadKey{d.ModuleSha256, sp}
	r.mu.Lock()
	l, ok := r.loading[key]
	if !ok {
		l = &load{done: make(chan struct{}), sha: d.ModuleSha256}
		r.loading[key] = l
	}
	l.calls++
	r.mu.Unlock()
	if !ok {
		l.mod, l.size, l.err = r.loadModule(context.WithoutCancel(ctx), d, sp, modules)
		close(l.done)
		if l.err != nil {
			r.mu.Lock()
			delete(r.loading, key) // a later call may succeed (the pool was down)
			r.mu.Unlock()
		}
	}
	select {
	case <-l.done:
	case <-ctx.Done():
		r.done(l)
		return nil, status.FromContextError(ctx.Err()).Err()
	}
	if l.err != nil {
		r.done(l)
		return nil, l.err
	}
	return l, nil
}

// done ends a call's hold on l, and unloads what is over the memory bound.
func (r *Runner) done(l *load) {
	r.mu.Lock()
	l.calls--
	l.lastUsed = time.Now()
	victims := r.overBoundLocked()
	r.mu.Unlock()
	r.unload(victims, "over the worker's memory bound for loaded functions")
}

// cost is the memory a loaded version stands for (Config.MaxModuleMemory).
func (l *load) cost() int64 {
	st := l.mod.Stats()
	alive := int64(st.Created - st.Discarded)
	return compiledFactor*l.size + alive*l.mod.Spec().Memory
}

// overBoundLocked removes from r.loading, least recently used first, the
// idle versions that must go for the rest to fit in MaxModuleMemory.
func (r *Runner) overBoundLocked() map[loadKey]*load {
	var total int64
	var idle []loadKey
	for k, l := range r.loading {
		if !isLoaded(l) {
			continue
		}
		total += l.cost()
		if l.calls == 0 {
			idle = append(idle, k)
		}
	}
	if total <= r.cfg.MaxModuleMemory {
		return nil
	}
	slices.SortFunc(idle, func(a, b loadKey) int { return r.loading[a].lastUsed.Compare(r.loading[b].lastUsed) })
	victims := map[loadKey]*load{}
	for _, k := range idle {
		if total <= r.cfg.MaxModuleMemory {
			break
		}
		l := r.loading[k]
		total -= l.cost()
		victims[k] = l
		delete(r.loading, k)
	}
	return victims
}

// isLoaded reports whether l's load has finished, and well.
func isLoaded(l *load) bool {
	select {
	case <-l.done:
		return l.err == nil
	default:
		return false
	}
}

// sweepIdle unloads, until Close, the versions not called for
// ModuleIdleTimeout.
func (r *Runner) sweepIdle() {
	every := min(r.cfg.ModuleIdleTimeout/2, time.Minute)
	t := time.NewTicker(every)
	defer t.Stop()
	for {
		select {
		case <-r.stop:
			return
		case <-t.C:
		}
		r.mu.Lock()
		victims := map[loadKey]*load{}
		for k, l := range r.loading {
			if isLoaded(l) && l.calls == 0 && time.Since(l.lastUsed) >= r.cfg.ModuleIdleTimeout {
				victims[k] = l
				delete(r.loading, k)
			}
		}
		r.mu.Unlock()
		r.unload(victims, "not called for "+r.cfg.ModuleIdleTimeout.String())
	}
}

// unload closes versions no call holds, already out of r.loading.
func (r *Runner) unload(victims map[loadKey]*load, why string) {
	if len(victims) == 0 {
		return
	}
	r.mu.Lock()
	r.unloaded += uint64(len(victims))
	r.mu.Unlock()
	for _, l := range victims {
		r.log.Info("unloaded a deployed function", "module", l.sha[:12], "export", l.mod.Spec().Export, "why", why)
		ctx, cancel := context.WithTimeout(context.Background(), 10*time.Second)
		if err := l.mod.Close(ctx); err != nil {
			r.log.Warn("unloading a deployed function", "module", l.sha[:12], "error", err)
		}
		cancel()
	}
}

func (r *Runner) loadModule(ctx context.Context, d *v1.Deployment, sp sandbox.Spec, modules worker.ModuleSource) (*sandbox.Module, int64, error) {
	wasm, err := modules(ctx, d.ModuleSha256)
	if err != nil {
		return nil, 0, status.Errorf(codes.Unavailable, "%s v%d: fetching its module: %v", d.Name, d.Version, err)
	}
	m, err := r.wasm.Load(ctx, wasm, sp, sandbox.SlogHost{Logger: r.log.With("function", d.Name, "version", d.Version)})
	if err != nil {
		st := childproc.GRPCStatus(err)
		return nil, 0, status.Errorf(st.Code(), "%s v%d: loading its module: %s", d.Name, d.Version, st.Message())
	}
	r.log.Info("loaded a deployed function", "function", d.Name, "version", d.Version, "module", d.ModuleSha256[:12])
	return m, int64(len(wasm)), nil
}

// Checker checks modules at deploy time for the pool: a WebAssembly module
// must load under its limits, export the function and import only what the
// host provides.
type Checker struct {
	wasm *sandbox.Runtime
}

// NewChecker returns a checker with its own runtime, caching compiled code
// in cacheDir. With a childCommand (this binary and sandbox.ChildArg), the
// module is instantiated in a child process, so that the pool never runs a
// module's code (its start function) itself.
func NewChecker(ctx context.Context, cacheDir string, childCommand []string) (*Checker, error) {
	cfg := sandbox.DefaultConfig()
	cfg.CacheDir = cacheDir
	cfg.ChildCommand = childCommand
	rt, err := sandbox.NewRuntime(ctx, cfg)
	if err != nil {
		return nil, err
	}
	return &Checker{wasm: rt}, nil
}

// CheckModule implements pool.ModuleChecker.
func (c *Checker) CheckModule(ctx context.Context, rt v1.Runtime, module []byte, export string) error {
	if rt == v1.Runtime_RUNTIME_STARLARK {
		return starlarkrun.Check(export+".star", module, export)
	}
	m, err := c.wasm.Load(ctx, module, sandbox.Spec{Export: export, Concurrency: 1}, sandbox.SlogHost{Logger: slog.New(slog.DiscardHandler)})
	if err != nil {
		return err
	}
	return m.Close(ctx)
}

// Close releases the checker's runtime.
func (c *Checker) Close(ctx context.Context) error { return c.wasm.Close(ctx) }
