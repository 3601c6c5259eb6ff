package sandbox

import (
	"context"
	_ "embed"
	"errors"
	"fmt"
	"math"

	"github.com/tetratelabs/wazero"
	"github.com/tetratelabs/wazero/api"
	"github.com/tetratelabs/wazero/imports/wasi_snapshot_preview1"
	"github.com/tetratelabs/wazero/sys"

	"github.com/hivemind/taskworker/internal/callhost"
)

// The Extism ABI, hosted on wazero directly (docs/RATIONALE.md, "How is
// the Extism ABI hosted?"). A plugin is two modules: the guest, and the
// Extism kernel, a small WebAssembly module that owns the memory blocks
// the guest and the host exchange (the input, the output, the error,
// host-made blocks). The guest imports extism:host/env, whose functions
// mostly forward to the kernel's exports; the host calls the kernel to set
// the input and read the output and the error.
//
// kernelWasm is the kernel go-sdk ships (extism-runtime.wasm, v1.7.0, BSD
// 3-Clause License, Copyright (c) 2023, Extism); TestKernelIsGoSDKs keeps
// it equal to the go-sdk in go.mod, against which TestExtismConformance
// runs Extism's fixture plugins both ways.
//
//go:embed extism-kernel.wasm
var kernelWasm []byte

// extismEnvModule is the import module name of the Extism ABI.
const extismEnvModule = "extism:host/env"

// kernelForwarded are the extism:host/env functions that call the kernel's
// export of the same name, with its signature.
var kernelForwarded = []string{
	"alloc", "free", "load_u8", "input_load_u8", "store_u8", "input_set", "output_set", "input_length",
	"input_offset", "output_length", "output_offset", "length", "length_unsafe", "reset", "error_set",
	"error_get", "memory_bytes",
}

// extismEnv are the functions of extism:host/env this host provides: those
// of go-sdk v1.7.1 (host.go, instantiateEnvModule). TestExtismEnvComplete
// keeps it true.
var extismEnv = map[string]bool{}

func init() {
	for _, name := range kernelForwarded {
		extismEnv[name] = true
	}
	for _, f := range extismDirect {
		extismEnv[f.name] = true
	}
}

// extismDirect are the extism:host/env functions served here rather than by
// the kernel.
var extismDirect = []struct {
	name            string
	params, results []api.ValueType
	fn              func(inst *instance, ctx context.Context, stack []uint64)
}{
	// Reads and writes of a word, straight in the kernel's memory (no call
	// into the kernel: the guest SDK reads and writes with these).
	{"input_load_u64", []api.ValueType{api.ValueTypeI64}, []api.ValueType{api.ValueTypeI64}, func(inst *instance, _ context.Context, stack []uint64) {
		stack[0] = inst.loadU64(stack[0] + inst.inputOffset)
	}},
	{"load_u64", []api.ValueType{api.ValueTypeI64}, []api.ValueType{api.ValueTypeI64}, func(inst *instance, _ context.Context, stack []uint64) {
		stack[0] = inst.loadU64(stack[0])
	}},
	{"store_u64", []api.ValueType{api.ValueTypeI64, api.ValueTypeI64}, nil, func(inst *instance, _ context.Context, stack []uint64) {
		if !inst.memory.WriteUint64Le(uint32(stack[0]), stack[1]) {
			panic(fmt.Sprintf("extism store_u64: offset %d is outside the kernel's memory", stack[0]))
		}
	}},
	// The configuration is empty.
	{"config_get", []api.ValueType{api.ValueTypeI64}, []api.ValueType{api.ValueTypeI64}, func(inst *instance, ctx context.Context, stack []uint64) {
		inst.free(ctx, stack[0])
		stack[0] = 0
	}},
	{"var_get", []api.ValueType{api.ValueTypeI64}, []api.ValueType{api.ValueTypeI64}, (*instance).varGet},
	{"var_set", []api.ValueType{api.ValueTypeI64, api.ValueTypeI64}, nil, (*instance).varSet},
	// Outbound HTTP goes through the pool, as taskworker.http_fetch does.
	{"http_request", []api.ValueType{api.ValueTypeI64, api.ValueTypeI64}, []api.ValueType{api.ValueTypeI64}, extismHTTPRequest},
	{"http_status_code", nil, []api.ValueType{api.ValueTypeI32}, func(inst *instance, _ context.Context, stack []uint64) {
		stack[0] = api.EncodeI32(inst.call.host.status)
	}},
	{"http_headers", nil, []api.ValueType{api.ValueTypeI64}, extismHTTPHeaders},
	// Extism's log functions are off (a PDK asks get_log_level first):
	// logs go through taskworker.log, under the function's limits.
	{"get_log_level", nil, []api.ValueType{api.ValueTypeI32}, func(_ *instance, _ context.Context, stack []uint64) {
		stack[0] = api.EncodeI32(math.MaxInt32)
	}},
	{"log_trace", []api.ValueType{api.ValueTypeI64}, nil, freeArg},
	{"log_debug", []api.ValueType{api.ValueTypeI64}, nil, freeArg},
	{"log_info", []api.ValueType{api.ValueTypeI64}, nil, freeArg},
	{"log_warn", []api.ValueType{api.ValueTypeI64}, nil, freeArg},
	{"log_error", []api.ValueType{api.ValueTypeI64}, nil, freeArg},
}

func freeArg(inst *instance, ctx context.Context, stack []uint64) { inst.free(ctx, stack[0]) }

// maxVarBytes bounds an instance's vars, names and values together.
const maxVarBytes = 64 * KiB

// plugin is a Module's compiled code: its own wazero runtime (so that its
// host functions and memory allocator are its own), in which the host
// modules are instantiated once, and the kernel and the guest compiled,
// to be instantiated per instance.
type plugin struct {
	rt     wazero.Runtime
	kernel wazero.CompiledModule
	guest  wazero.CompiledModule
}

// compilePlugin compiles the kernel and the guest in a new runtime and
// instantiates WASI, extism:host/env and m's taskworker functions in it.
func compilePlugin(ctx context.Context, cfg wazero.RuntimeConfig, wasm []byte, m *Module) (*plugin, error) {
	p := &plugin{rt: wazero.NewRuntimeWithConfig(ctx, cfg)}
	err := func() error {
		if _, err := wasi_snapshot_preview1.Instantiate(ctx, p.rt); err != nil {
			return err
		}
		var err error
		if p.kernel, err = p.rt.CompileModule(ctx, kernelWasm); err != nil {
			return fmt.Errorf("the Extism kernel: %w", err)
		}
		if err := p.instantiateEnv(ctx); err != nil {
			return err
		}
		if _, err := m.hostModule(p.rt.NewHostModuleBuilder(Namespace)).Instantiate(ctx); err != nil {
			return err
		}
		p.guest, err = p.rt.CompileModule(ctx, wasm)
		return err
	}()
	if err != nil {
		_ = p.rt.Close(ctx)
		return nil, err
	}
	return p, nil
}

// instantiateEnv builds extism:host/env. Each function finds its instance
// in the call's context (instanceOf).
func (p *plugin) instantiateEnv(ctx context.Context) error {
	b := p.rt.NewHostModuleBuilder(extismEnvModule)
	kernelDefs := p.kernel.ExportedFunctions()
	for i, name := range kernelForwarded {
		def, ok := kernelDefs[name]
		if !ok {
			return fmt.Errorf("the Extism kernel does not export %s", name)
		}
		b.NewFunctionBuilder().WithGoFunction(api.GoFunc(func(ctx context.Context, stack []uint64) {
			if err := instanceOf(ctx, name).kernelFuncs[i].CallWithStack(ctx, stack); err != nil {
				panic(err)
			}
		}), def.ParamTypes(), def.ResultTypes()).Export(name)
	}
	for _, f := range extismDirect {
		b.NewFunctionBuilder().WithGoFunction(api.GoFunc(func(ctx context.Context, stack []uint64) {
			f.fn(instanceOf(ctx, f.name), ctx, stack)
		}), f.params, f.results).Export(f.name)
	}
	_, err := b.Instantiate(ctx)
	return err
}

func (p *plugin) close(ctx context.Context) error { return p.rt.Close(ctx) }

// instanceOf is the instance whose call is running: host functions find it
// in their context.
func instanceOf(ctx context.Context, fn string) *instance {
	inst, _ := ctx.Value(callKey{}).(*instance)
	if inst == nil {
		panic(fmt.Sprintf("%s was called outside a call (from a start function?)", fn))
	}
	return inst
}

// instantiate makes the modules of one instance: the kernel and the guest,
// anonymous (so that a runtime holds many), and looks up once every
// function a call uses (a lookup per call costs microseconds and a new
// call engine; docs/RATIONALE.md, "What does a call cost").
func (p *plugin) instantiate(ctx context.Context, inst *instance, config wazero.ModuleConfig) error {
	kernel, err := p.rt.InstantiateModule(ctx, p.kernel, wazero.NewModuleConfig().WithName(""))
	if err != nil {
		return fmt.Errorf("the Extism kernel: %w", err)
	}
	// No _start: go-sdk does not run it either; a reactor's _initialize
	// runs as the instance's start-up (instance.start).
	guest, err := p.rt.InstantiateModule(ctx, p.guest, config.WithName("").WithStartFunctions())
	if err != nil {
		_ = kernel.Close(ctx)
		return err
	}
	inst.kernel, inst.guest = kernel, guest
	inst.memory = kernel.ExportedMemory("memory")
	inst.kernelFuncs = make([]api.Function, len(kernelForwarded))
	for i, name := range kernelForwarded {
		inst.kernelFuncs[i] = kernel.ExportedFunction(name)
	}
	inst.export = guest.ExportedFunction(inst.m.spec.Export)
	inst.initGuest = guestInit(guest)
	return nil
}

// Indexes in kernelForwarded of the kernel functions the host calls.
var (
	kernelAlloc        = kernelIndex("alloc")
	kernelFree         = kernelIndex("free")
	kernelInputSet     = kernelIndex("input_set")
	kernelOutputOffset = kernelIndex("output_offset")
	kernelOutputLength = kernelIndex("output_length")
	kernelLength       = kernelIndex("length")
	kernelReset        = kernelIndex("reset")
	kernelErrorGet     = kernelIndex("error_get")
)

func kernelIndex(name string) int {
	for i, n := range kernelForwarded {
		if n == name {
			return i
		}
	}
	panic("no kernel function " + name)
}

// guestInit is what must run once before a guest's first call, as go-sdk
// runs it: a Haskell guest's hs_init (after _initialize), a WASI reactor's
// _initialize, a WASI command's __wasm_call_ctors; or nil.
func guestInit(guest api.Module) func(context.Context) error {
	noParams := func(name string) api.Function {
		f := guest.ExportedFunction(name)
		if f == nil || len(f.Definition().ParamTypes()) != 0 {
			return nil
		}
		return f
	}
	if hs := guest.ExportedFunction("hs_init"); hs != nil {
		reactor := noParams("_initialize")
		return func(ctx context.Context) error {
			if reactor != nil {
				if _, err := reactor.Call(ctx); err != nil {
					return err
				}
			}
			_, err := hs.Call(ctx, 0, 0)
			return err
		}
	}
	for _, name := range []string{"_initialize", "__wasm_call_ctors"} {
		if f := noParams(name); f != nil {
			return func(ctx context.Context) error {
				_, err := f.Call(ctx)
				return err
			}
		}
	}
	return nil
}

// errExited is callGuest's report that the instance was closed before the
// call: its last call exited (WASI proc_exit(0), which looks like success).
var errExited = errors.New("the instance exited in its last call")

// callGuest runs the export with input as the plugin input, as go-sdk's
// Plugin.Call does: it returns the export's result code, the output, the
// error message the guest set (error_set), and the error that stopped
// the call (a trap, an exit, the context).
func (inst *instance) callGuest(ctx context.Context, input []byte) (rc uint32, out []byte, guestErr string, err error) {
	if inst.guest.IsClosed() {
		return 0, nil, "", errExited
	}
	var stack [2]uint64
	kcall := func(i int, args ...uint64) uint64 {
		copy(stack[:], args)
		if err == nil {
			err = inst.kernelFuncs[i].CallWithStack(ctx, stack[:])
		}
		return stack[0]
	}
	kcall(kernelReset)
	ptr := kcall(kernelAlloc, uint64(len(input)))
	if err == nil && !inst.memory.Write(uint32(ptr), input) {
		err = errors.New("the input does not fit in the kernel's memory")
	}
	kcall(kernelInputSet, ptr, uint64(len(input)))
	if err != nil {
		return 0, nil, "", fmt.Errorf("setting the input: %w", err)
	}
	inst.inputOffset = ptr
	if inst.initGuest != nil {
		// An instance a child made again after a trap: its start-up runs
		// now, under this call's limits, but still for no call.
		err := inst.initGuest(callhost.With(ctx, startupHost{}))
		inst.initGuest = nil
		if err != nil {
			return 1, nil, "", fmt.Errorf("the guest's start-up failed: %w", err)
		}
	}
	stack = [2]uint64{}
	err = inst.export.CallWithStack(ctx, stack[:])
	rc = uint32(stack[0])
	if exit := (*sys.ExitError)(nil); errors.As(err, &exit) {
		if len(inst.export.Definition().ResultTypes()) == 0 {
			rc = exit.ExitCode()
		}
		if exit.ExitCode() == 0 {
			err = nil
		}
	}
	if err != nil {
		if len(inst.export.Definition().ResultTypes()) == 0 {
			rc = 1
		}
		return rc, nil, "", err
	}
	if h := kcall(kernelErrorGet); err == nil && h != 0 {
		guestErr = string(inst.read(ctx, h))
	}
	offset, length := kcall(kernelOutputOffset), kcall(kernelOutputLength)
	if err != nil {
		return rc, nil, guestErr, err
	}
	out, ok := inst.memory.Read(uint32(offset), uint32(length))
	if !ok {
		return rc, nil, guestErr, errors.New("the output is outside the kernel's memory")
	}
	return rc, append([]byte(nil), out...), guestErr, nil
}

// The kernel's memory blocks, as host functions use them. A bad handle from
// the guest panics, which traps the call.

func (inst *instance) kernelCall(ctx context.Context, i int, arg uint64) uint64 {
	stack := []uint64{arg}
	if err := inst.kernelFuncs[i].CallWithStack(ctx, stack); err != nil {
		panic(err)
	}
	return stack[0]
}

func (inst *instance) free(ctx context.Context, h uint64) {
	if h != 0 {
		inst.kernelCall(ctx, kernelFree, h)
	}
}

func (inst *instance) length(ctx context.Context, h uint64) uint64 {
	return inst.kernelCall(ctx, kernelLength, h)
}

// read returns a copy of the block h.
func (inst *instance) read(ctx context.Context, h uint64) []byte {
	b, ok := inst.memory.Read(uint32(h), uint32(inst.length(ctx, h)))
	if !ok {
		panic(fmt.Sprintf("block %d is outside the kernel's memory", h))
	}
	return append([]byte(nil), b...)
}

// write copies b into a new block and returns its handle.
func (inst *instance) write(ctx context.Context, b []byte) uint64 {
	h := inst.kernelCall(ctx, kernelAlloc, uint64(len(b)))
	if h == 0 || !inst.memory.Write(uint32(h), b) {
		panic(fmt.Sprintf("cannot allocate a block of %d bytes in the kernel's memory", len(b)))
	}
	return h
}

func (inst *instance) loadU64(offset uint64) uint64 {
	v, ok := inst.memory.ReadUint64Le(uint32(offset))
	if !ok {
		panic(fmt.Sprintf("extism load: offset %d is outside the kernel's memory", offset))
	}
	return v
}

// varGet is var_get(name) -> value: a copy of the var's value, or 0.
func (inst *instance) varGet(ctx context.Context, stack []uint64) {
	name := inst.read(ctx, stack[0])
	inst.free(ctx, stack[0])
	value, ok := inst.vars[string(name)]
	if !ok {
		stack[0] = 0
		return
	}
	stack[0] = inst.write(ctx, value)
}

// varSet is var_set(name, value): value 0 deletes the var. Vars last as
// long as the instance, at most maxVarBytes of names and values.
func (inst *instance) varSet(ctx context.Context, stack []uint64) {
	name := string(inst.read(ctx, stack[0]))
	inst.free(ctx, stack[0])
	if stack[1] == 0 {
		delete(inst.vars, name)
		return
	}
	value := inst.read(ctx, stack[1])
	inst.free(ctx, stack[1])
	size := len(name) + len(value)
	for k, v := range inst.vars {
		if k != name {
			size += len(k) + len(v)
		}
	}
	if size > maxVarBytes {
		panic(fmt.Sprintf("extism var_set: the vars would take %d bytes, over this host's %s", size, formatBytes(maxVarBytes)))
	}
	if inst.vars == nil {
		inst.vars = map[string][]byte{}
	}
	inst.vars[name] = value
}
