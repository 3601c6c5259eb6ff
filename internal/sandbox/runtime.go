package sandbox

import (
	"bytes"
	"context"
	"crypto/rand"
	"crypto/sha256"
	"errors"
	"fmt"
	"io/fs"
	"log/slog"
	"path/filepath"
	goruntime "runtime"
	"slices"
	"strings"
	"sync"
	"sync/atomic"
	"time"

	"github.com/tetratelabs/wazero"
	"github.com/tetratelabs/wazero/api"
	"github.com/tetratelabs/wazero/experimental"
	"github.com/tetratelabs/wazero/imports/wasi_snapshot_preview1"
)

// Runtime loads modules and holds what they share: the compiled-code cache
// (in memory, and on disk under Config.CacheDir) and the operator's limits.
// A worker has one. It is safe for concurrent use.
type Runtime struct {
	cfg    Config
	logger *slog.Logger
	cache  wazero.CompilationCache

	// compileMu serializes compiling, so that the cache directory's
	// changes during one compile are that compile's (see Stats).
	compileMu sync.Mutex
	// checker compiles each module once before its plugin does, to inspect
	// its imports and exports and to account for the cache; the plugin's
	// compile then finds the code in the shared in-memory cache.
	checker  wazero.Runtime
	wasiFunc map[string]bool

	compiled, fromDisk, fromMemory atomic.Uint64

	// calls counts the calls of all its modules in the worker: running,
	// or waiting for their turn. Only a call that is alone here spins for
	// its child's answer (child.run): one that is not would take CPU from
	// the others.
	calls atomic.Int32

	// layers logs once which layers confine the child processes.
	layers sync.Once

	mu      sync.Mutex
	modules map[*Module]struct{}
	live    map[[32]byte]int // compiled plugins open, by module digest
	closed  bool
}

// RuntimeStats counts how a Runtime got the compiled code of the modules it
// loaded.
type RuntimeStats struct {
	Compiled   uint64 // compiled from the WebAssembly bytes
	FromDisk   uint64 // read from the compilation cache in Config.CacheDir
	FromMemory uint64 // shared with a module already loaded
	Modules    int    // loaded and not yet closed
}

// NewRuntime validates cfg and starts a Runtime. Close it when done.
func NewRuntime(ctx context.Context, cfg Config) (*Runtime, error) {
	if err := cfg.Validate(); err != nil {
		return nil, fmt.Errorf("sandbox config: %w", err)
	}
	r := &Runtime{cfg: cfg, logger: cfg.Logger, modules: map[*Module]struct{}{}, live: map[[32]byte]int{}}
	if r.logger == nil {
		r.logger = slog.Default()
	}
	if cfg.CacheDir != "" {
		cache, err := wazero.NewCompilationCacheWithDir(cfg.CacheDir)
		if err != nil {
			return nil, fmt.Errorf("sandbox compilation cache in %s: %w (set Config.CacheDir to a writable directory)", cfg.CacheDir, err)
		}
		r.cache = cache
	} else {
		r.cache = wazero.NewCompilationCache()
	}
	r.checker = wazero.NewRuntimeWithConfig(ctx, r.runtimeConfig())
	wasi := r.checker.NewHostModuleBuilder(wasi_snapshot_preview1.ModuleName)
	wasi_snapshot_preview1.NewFunctionExporter().ExportFunctions(wasi)
	wasiCompiled, err := wasi.Compile(ctx)
	if err != nil {
		_ = r.close(ctx)
		return nil, fmt.Errorf("sandbox: listing WASI functions: %w", err)
	}
	r.wasiFunc = map[string]bool{}
	for name := range wasiCompiled.ExportedFunctions() {
		r.wasiFunc[name] = true
	}
	_ = wasiCompiled.Close(ctx)
	return r, nil
}

// runtimeConfig is the wazero configuration of every module: the shared
// cache, and deadlines that stop running code, unless calls run in child
// processes (which compile the same way, so that they find the code in the
// cache, and are killed instead). There is no page limit here:
// memory is bounded per instance by memoryBudget.
func (r *Runtime) runtimeConfig() wazero.RuntimeConfig {
	return wazero.NewRuntimeConfig().
		WithCompilationCache(r.cache).
		WithCloseOnContextDone(!r.cfg.noCloseOnContextDone && !r.cfg.isolated())
}

// moduleConfig is the WASI view of every instance: no arguments, no
// environment, no files, no sockets, empty stdin, stdout dropped; real
// clocks and cryptographic randomness. Stderr is set per instance.
func moduleConfig() wazero.ModuleConfig {
	return wazero.NewModuleConfig().
		WithSysWalltime().
		WithSysNanotime().
		WithRandSource(rand.Reader)
}

// Load compiles (or finds compiled) a module, checks it against spec and
// this host, instantiates it once, and returns it ready to Call. Every
// problem with the module is reported here, not at the first call.
func (r *Runtime) Load(ctx context.Context, wasm []byte, spec Spec, host Host) (*Module, error) {
	spec = spec.withDefaults(r.cfg.Defaults)
	if err := spec.validate(r.cfg); err != nil {
		return nil, fmt.Errorf("%w: %w", ErrInvalidSpec, err)
	}
	if spec.Export == "" {
		return nil, fmt.Errorf("%w: Export is empty: name the exported function to call", ErrInvalidSpec)
	}
	if host == nil {
		return nil, fmt.Errorf("%w: the Host is nil", ErrInvalidSpec)
	}
	if err := checkHeader(wasm); err != nil {
		return nil, err
	}
	r.mu.Lock()
	closed := r.closed
	r.mu.Unlock()
	if closed {
		return nil, fmt.Errorf("sandbox runtime: %w", ErrClosed)
	}

	digest := sha256.Sum256(wasm)
	if !r.cfg.checked { // a child gets the bytes its parent merged
		wasm = mergeDataSegments(wasm)
	}
	m := &Module{
		rt:       r,
		spec:     spec,
		host:     host,
		digest:   digest,
		logLimit: newTokenBucket(r.cfg.LogLinesPerSecond),
	}
	if r.cfg.isolated() {
		m.wasm = wasm
	}
	if err := r.compile(ctx, m, wasm); err != nil {
		return nil, err
	}
	// One instance now, so that every problem with the module shows
	// here; with child processes, in the first child, so that this process
	// never runs the module's code (its start function).
	m.newSupervisor()
	if err := m.sup.Warm(ctx, struct{}{}, 1); err != nil {
		m.sup.Close()
		_ = m.closeCompiled(ctx)
		if errors.Is(err, ErrMemoryLimit) {
			// At deploy, not enough memory is the spec's fault.
			return nil, fmt.Errorf("%w: %v", ErrInvalidSpec, err)
		}
		return nil, err
	}

	r.mu.Lock()
	defer r.mu.Unlock()
	if r.closed {
		m.sup.Close()
		_ = m.closeCompiled(ctx)
		return nil, fmt.Errorf("sandbox runtime: %w", ErrClosed)
	}
	r.modules[m] = struct{}{}
	return m, nil
}

// checkHeader tells apart bytes that are not WebAssembly at all.
func checkHeader(wasm []byte) error {
	magic := []byte("\x00asm")
	switch {
	case len(wasm) == 0:
		return fmt.Errorf("%w: the module is empty: deploy a .wasm file", ErrNotWasm)
	case len(wasm) < 8 && bytes.HasPrefix(magic, wasm[:min(len(wasm), 4)]):
		return fmt.Errorf("%w: %d bytes is too short for a module: the file is truncated", ErrInvalidModule, len(wasm))
	case !bytes.HasPrefix(wasm, magic):
		return fmt.Errorf("%w: the bytes do not start with the WebAssembly magic number \\0asm: deploy a .wasm module", ErrNotWasm)
	case !bytes.Equal(wasm[4:8], []byte{1, 0, 0, 0}):
		return fmt.Errorf("%w: version %x is not a core WebAssembly module (version 1); components are not supported: build a core module (for Go: GOOS=wasip1 GOARCH=wasm -buildmode=c-shared)", ErrInvalidModule, wasm[4:8])
	}
	return nil
}

// compile checks the module's imports and exports and builds m.compiled.
func (r *Runtime) compile(ctx context.Context, m *Module, wasm []byte) error {
	r.compileMu.Lock()
	defer r.compileMu.Unlock()

	live := r.isLoaded(m.digest)
	before := r.cacheFiles()
	count := func() {
		switch {
		case live:
			r.fromMemory.Add(1)
		case r.cfg.CacheDir != "" && !cacheChanged(before, r.cacheFiles()):
			r.fromDisk.Add(1)
		default:
			r.compiled.Add(1)
		}
	}
	if r.cfg.checked {
		// A child process loads what its parent has checked: one
		// compile (decoding and validating the module is most of a
		// child's start) and the count around it.
		defer count()
	} else {
		checked, err := r.checker.CompileModule(experimental.WithCompilationWorkers(ctx, goruntime.GOMAXPROCS(0)), wasm)
		if err != nil {
			hint := ""
			if strings.Contains(err.Error(), "EOF") {
				hint = ": the file is truncated; build or upload it again"
			}
			return fmt.Errorf("%w: %v%s", ErrInvalidModule, err, hint)
		}
		// Closed only after the plugin has compiled, so that its compile finds
		// the code in memory.
		defer checked.Close(ctx)
		count()
		if err := r.checkImports(checked); err != nil {
			return err
		}
		if err := checkExport(checked, m.spec.Export); err != nil {
			return err
		}
	}

	var err error
	if m.compiled, err = compilePlugin(ctx, r.runtimeConfig(), wasm, m); err != nil {
		return fmt.Errorf("%w: %v", ErrInvalidModule, err)
	}
	r.mu.Lock()
	r.live[m.digest]++
	r.mu.Unlock()
	return nil
}

// checkImports names every import this host does not provide.
func (r *Runtime) checkImports(c wazero.CompiledModule) error {
	var unknown []string
	for _, f := range c.ImportedFunctions() {
		module, name, _ := f.Import()
		switch {
		case module == extismEnvModule && extismEnv[name],
			module == wasi_snapshot_preview1.ModuleName && r.wasiFunc[name],
			module == Namespace && providedImports[name]:
			continue
		case module == Namespace && reservedImports[name] != "":
			unknown = append(unknown, fmt.Sprintf("%s.%s (%s)", module, name, reservedImports[name]))
		default:
			unknown = append(unknown, fmt.Sprintf("function %s.%s", module, name))
		}
	}
	for _, mem := range c.ImportedMemories() {
		module, name, _ := mem.Import()
		unknown = append(unknown, fmt.Sprintf("memory %s.%s", module, name))
	}
	if len(unknown) == 0 {
		return nil
	}
	const show = 8
	more := ""
	if len(unknown) > show {
		more = fmt.Sprintf(" and %d more", len(unknown)-show)
		unknown = unknown[:show]
	}
	return fmt.Errorf("%w: %s%s; a module may import only extism:host/env, wasi_snapshot_preview1 and the %s functions of docs/ABI.md",
		ErrUnknownImport, strings.Join(unknown, ", "), more, Namespace)
}

// checkExport checks that export is a function with an Extism signature.
func checkExport(c wazero.CompiledModule, export string) error {
	exports := c.ExportedFunctions()
	def, ok := exports[export]
	if !ok {
		var names []string
		for name := range exports {
			if !strings.HasPrefix(name, "_") && name != "hs_init" && name != "hs_exit" {
				names = append(names, name)
			}
		}
		slices.Sort(names)
		if len(names) > 12 {
			names = append(names[:12], "...")
		}
		return fmt.Errorf("%w: the module exports no function %q; it exports: %s", ErrMissingExport, export, strings.Join(names, ", "))
	}
	params, results := def.ParamTypes(), def.ResultTypes()
	if len(params) != 0 || len(results) > 1 || len(results) == 1 && results[0] != api.ValueTypeI32 {
		return fmt.Errorf("%w: %q has the signature %s, not the Extism () -> i32: export the plugin function, not a helper",
			ErrMissingExport, export, signature(params, results))
	}
	return nil
}

// isLoaded reports whether a module with these bytes is open, in which
// case its compiled code is in memory.
func (r *Runtime) isLoaded(digest [32]byte) bool {
	r.mu.Lock()
	defer r.mu.Unlock()
	return r.live[digest] > 0
}

// cacheFiles lists the compilation cache's files with their modification
// times. wazero writes a file per compiled module and never rewrites one in
// place, so a compile shows as a new or changed entry.
func (r *Runtime) cacheFiles() map[string]time.Time {
	if r.cfg.CacheDir == "" {
		return nil
	}
	files := map[string]time.Time{}
	_ = filepath.WalkDir(r.cfg.CacheDir, func(path string, d fs.DirEntry, err error) error {
		if err != nil || d.IsDir() || strings.HasSuffix(path, ".tmp") {
			return nil
		}
		if info, err := d.Info(); err == nil {
			files[path] = info.ModTime()
		}
		return nil
	})
	return files
}

func cacheChanged(before, after map[string]time.Time) bool {
	for path, mod := range after {
		if was, ok := before[path]; !ok || !was.Equal(mod) {
			return true
		}
	}
	return false
}

// Stats returns the Runtime's counters.
func (r *Runtime) Stats() RuntimeStats {
	r.mu.Lock()
	n := len(r.modules)
	r.mu.Unlock()
	return RuntimeStats{
		Compiled:   r.compiled.Load(),
		FromDisk:   r.fromDisk.Load(),
		FromMemory: r.fromMemory.Load(),
		Modules:    n,
	}
}

// Close closes every loaded module (see Module.Close: calls in flight may
// finish until ctx ends) and releases the compiled code. The disk cache
// stays for the next Runtime.
func (r *Runtime) Close(ctx context.Context) error {
	r.mu.Lock()
	if r.closed {
		r.mu.Unlock()
		return nil
	}
	r.closed = true
	modules := make([]*Module, 0, len(r.modules))
	for m := range r.modules {
		modules = append(modules, m)
	}
	r.mu.Unlock()

	var errs []error
	for _, m := range modules {
		errs = append(errs, m.Close(ctx))
	}
	errs = append(errs, r.close(ctx))
	return errors.Join(errs...)
}

func (r *Runtime) close(ctx context.Context) error {
	return errors.Join(r.checker.Close(ctx), r.cache.Close(ctx))
}

// forget drops a module whose compiled plugin was closed.
func (r *Runtime) forget(m *Module) {
	r.mu.Lock()
	defer r.mu.Unlock()
	delete(r.modules, m)
	if r.live[m.digest]--; r.live[m.digest] <= 0 {
		delete(r.live, m.digest)
	}
}

// signature writes a function type as wazero's errors do.
func signature(params, results []api.ValueType) string {
	names := func(types []api.ValueType) string {
		s := make([]string, len(types))
		for i, t := range types {
			s[i] = api.ValueTypeName(t)
		}
		return "(" + strings.Join(s, ", ") + ")"
	}
	return names(params) + " -> " + names(results)
}
