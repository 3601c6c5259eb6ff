package sandbox

import (
	"reflect"
	"unsafe"

	extism "github.com/extism/go-sdk"
	"github.com/tetratelabs/wazero/api"
)

// go-sdk's Plugin looks up the Extism kernel's exports by name on every
// call (reset, alloc, input_set, output_offset, output_length, error_get),
// and its extism:host/env functions do the same on every kernel call a
// guest makes; each wazero ExportedFunction makes a new call engine with a
// fresh stack. cacheLookups makes an instance's lookups happen once: it
// puts a caching wrapper around the kernel module and the main module of
// the Plugin. docs/RATIONALE.md ("What does a call cost") has the figures.
//
// The Plugin's fields are unexported, so this reaches them by reflection:
// if go-sdk renames or retypes them, cacheLookups does nothing and reports
// false (TestCacheLookups fails, so an upgrade notices).

// cachingModule is an api.Module whose ExportedFunction remembers what it
// found. An instance serves one call at a time, and kernel functions do
// not call back into the host, so a looked-up function is never on the
// stack twice.
type cachingModule struct {
	api.Module
	funcs map[string]api.Function
}

func (m *cachingModule) ExportedFunction(name string) api.Function {
	if f, ok := m.funcs[name]; ok {
		return f
	}
	f := m.Module.ExportedFunction(name)
	m.funcs[name] = f
	return f
}

// cacheLookups wraps p's kernel and main modules; it reports whether it
// could.
func cacheLookups(p *extism.Plugin) bool {
	v := reflect.ValueOf(p).Elem()
	ok := true
	for _, name := range []string{"extism", "mainModule"} {
		f := v.FieldByName(name)
		if !f.IsValid() || f.Type() != reflect.TypeFor[api.Module]() {
			ok = false
			continue
		}
		field := reflect.NewAt(f.Type(), unsafe.Pointer(f.UnsafeAddr())).Elem()
		inner, _ := field.Interface().(api.Module)
		if inner == nil {
			ok = false
			continue
		}
		if _, done := inner.(*cachingModule); !done {
			field.Set(reflect.ValueOf(api.Module(&cachingModule{Module: inner, funcs: map[string]api.Function{}})))
		}
	}
	return ok
}
