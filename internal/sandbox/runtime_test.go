package sandbox

import (
	"context"
	"errors"
	"strings"
	"testing"
	"time"

	"google.golang.org/grpc/codes"

	"github.com/hivemind/taskworker/internal/childproc"
)

// TestLoadErrors: every problem with a module is found at Load, with an
// error that says what is wrong.
func TestLoadErrors(t *testing.T) {
	r := newTestRuntime(t, DefaultConfig())
	add := guestWasm(t, goAdd)
	ok := []wasmFunc{{export: "run", results: []byte{i32}, body: bodyReturnZero}}
	tests := []struct {
		name    string
		wasm    []byte
		spec    Spec
		wantErr error
		want    string // in the message
	}{
		{"empty", nil, Spec{Export: "run"}, ErrNotWasm, "empty"},
		{"not wasm", []byte("#!/bin/sh\necho hello\n"), Spec{Export: "run"}, ErrNotWasm, "magic number"},
		{"truncated header", add[:6], Spec{Export: "add"}, ErrInvalidModule, "truncated"},
		{"truncated", add[:len(add)/2], Spec{Export: "add"}, ErrInvalidModule, ""},
		{"component", append([]byte("\x00asm\x0d\x00\x01\x00"), add[8:]...), Spec{Export: "add"}, ErrInvalidModule, "components are not supported"},
		{"unknown import", wasmModule{
			imports: []wasmImport{{module: "env", name: "fd_open_anything", params: []byte{i32}, results: []byte{i32}}},
			funcs:   ok,
		}.bytes(), Spec{Export: "run"}, ErrUnknownImport, "function env.fd_open_anything"},
		{"unknown import in a known namespace", wasmModule{
			imports: []wasmImport{{module: "wasi_snapshot_preview1", name: "sock_open"}},
			funcs:   ok,
		}.bytes(), Spec{Export: "run"}, ErrUnknownImport, "wasi_snapshot_preview1.sock_open"},
		{"reserved taskworker import", wasmModule{
			imports: []wasmImport{{module: Namespace, name: "dns_resolve", params: []byte{i64, i32}, results: []byte{i64}}},
			funcs:   ok,
		}.bytes(), Spec{Export: "run"}, ErrUnknownImport, "taskworker.dns_resolve (DNS host functions are not available yet"},
		{"import with the wrong signature", wasmModule{
			imports: []wasmImport{{module: Namespace, name: "log", params: []byte{i32}}},
			funcs:   ok,
		}.bytes(), Spec{Export: "run"}, ErrInvalidModule, "signature"},
		{"missing export", add, Spec{Export: "sub"}, ErrMissingExport, `no function "sub"; it exports: add, divide, hello`},
		{"export with parameters", wasmModule{funcs: []wasmFunc{{export: "run", params: []byte{i32}, results: []byte{i32}, body: bodyReturnZero}}}.bytes(),
			Spec{Export: "run"}, ErrMissingExport, "(i32) -> (i32)"},
		{"memory over the limit at start", wasmModule{memoryPages: 100, funcs: ok}.bytes(),
			Spec{Export: "run", Limits: Limits{Memory: 1 * MiB}}, ErrInvalidSpec, "as soon as it starts"},
		{"no export named", add, Spec{}, ErrInvalidSpec, "Export is empty"},
		{"memory over the operator maximum", add, Spec{Export: "add", Limits: Limits{Memory: 2 * GiB}}, ErrInvalidSpec, "over the operator maximum of 1 GiB"},
		{"timeout over the operator maximum", add, Spec{Export: "add", Limits: Limits{Timeout: time.Hour}}, ErrInvalidSpec, "Timeout (1h0m0s) is over"},
		{"negative concurrency", add, Spec{Export: "add", Concurrency: -1}, ErrInvalidSpec, "Concurrency (-1) must be positive"},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			host, _ := testHost()
			m, err := r.Load(context.Background(), tt.wasm, tt.spec, host)
			if err == nil {
				m.Close(context.Background())
				t.Fatal("loaded; want an error")
			}
			t.Log(err)
			if !errors.Is(err, tt.wantErr) || !strings.Contains(err.Error(), tt.want) {
				t.Fatalf("got %v; want %v mentioning %q", err, tt.wantErr, tt.want)
			}
			if code := childproc.GRPCCode(err); code != codes.InvalidArgument {
				t.Errorf("code %v; want InvalidArgument", code)
			}
		})
	}
}

// TestExtismEnvComplete loads a module importing every extism:host/env
// function this package accepts, with go-sdk's signatures: each exists.
func TestExtismEnvComplete(t *testing.T) {
	sigs := map[string][2][]byte{
		"alloc": {{i64}, {i64}}, "free": {{i64}, nil}, "load_u8": {{i64}, {i32}}, "input_load_u8": {{i64}, {i32}},
		"store_u64": {{i64, i64}, nil}, "store_u8": {{i64, i32}, nil}, "input_set": {{i64, i64}, nil},
		"output_set": {{i64, i64}, nil}, "input_length": {nil, {i64}}, "input_offset": {nil, {i64}},
		"output_length": {nil, {i64}}, "output_offset": {nil, {i64}}, "length": {{i64}, {i64}},
		"length_unsafe": {{i64}, {i64}}, "reset": {nil, nil}, "error_set": {{i64}, nil}, "error_get": {nil, {i64}},
		"memory_bytes": {nil, {i64}}, "input_load_u64": {{i64}, {i64}}, "load_u64": {{i64}, {i64}},
		"config_get": {{i64}, {i64}}, "var_get": {{i64}, {i64}}, "var_set": {{i64, i64}, nil},
		"http_request": {{i64, i64}, {i64}}, "http_status_code": {nil, {i32}}, "http_headers": {nil, {i64}},
		"get_log_level": {nil, {i32}}, "log_trace": {{i64}, nil}, "log_debug": {{i64}, nil},
		"log_info": {{i64}, nil}, "log_warn": {{i64}, nil}, "log_error": {{i64}, nil},
	}
	if len(sigs) != len(extismEnv) {
		t.Fatalf("the test knows %d functions, the package %d", len(sigs), len(extismEnv))
	}
	mod := wasmModule{funcs: []wasmFunc{{export: "run", results: []byte{i32}, body: bodyReturnZero}}}
	for name := range extismEnv {
		sig, ok := sigs[name]
		if !ok {
			t.Fatalf("no signature for %s", name)
		}
		mod.imports = append(mod.imports, wasmImport{module: "extism:host/env", name: name, params: sig[0], results: sig[1]})
	}
	r := newTestRuntime(t, DefaultConfig())
	m := load(t, r, mod.bytes(), Spec{Export: "run"})
	if got := call(t, m, ""); got != "" {
		t.Errorf("got %q", got)
	}
}

// TestCompilationCacheAcrossRestarts: a second Runtime over the same cache
// directory reads the compiled code instead of compiling again.
func TestCompilationCacheAcrossRestarts(t *testing.T) {
	cfg := DefaultConfig()
	cfg.CacheDir = t.TempDir()
	// A Rust plugin: smaller than a Go guest, quicker to compile under -race.
	wasm := extismPlugin(t, "count_vowels.wasm")
	ctx := context.Background()

	first, err := NewRuntime(ctx, cfg)
	if err != nil {
		t.Fatal(err)
	}
	m1 := load(t, first, wasm, Spec{Export: "count_vowels"})
	m2 := load(t, first, wasm, Spec{Export: "count_vowels", Concurrency: 1}) // same bytes, while m1 is open
	if got := call(t, m2, "cache"); !strings.Contains(got, `"count":2`) {
		t.Errorf("count_vowels returned %q", got)
	}
	if got, want := first.Stats(), (RuntimeStats{Compiled: 1, FromMemory: 1, Modules: 2}); got != want {
		t.Errorf("first runtime: %+v; want %+v", got, want)
	}
	_ = m1
	if err := first.Close(ctx); err != nil {
		t.Fatal(err)
	}

	second := newTestRuntime(t, cfg) // the restart
	m := load(t, second, wasm, Spec{Export: "count_vowels"})
	if got := call(t, m, "restart"); !strings.Contains(got, `"count":2`) {
		t.Errorf("count_vowels returned %q", got)
	}
	if got, want := second.Stats(), (RuntimeStats{FromDisk: 1, Modules: 1}); got != want {
		t.Errorf("after a restart: %+v; want %+v (no compile)", got, want)
	}
}

func TestConfigValidate(t *testing.T) {
	if err := DefaultConfig().Validate(); err != nil {
		t.Fatalf("DefaultConfig: %v", err)
	}
	tests := []struct {
		name   string
		change func(*Config)
		want   string
	}{
		{"tiny memory", func(c *Config) { c.MaxMemory = 1000 }, "MaxMemory (1000 bytes) must be at least"},
		{"memory over 4 GiB", func(c *Config) { c.MaxMemory = 8 * GiB }, "cannot be over 4 GiB"},
		{"no timeout", func(c *Config) { c.MaxTimeout = 0 }, "MaxTimeout (0s) must be positive"},
		{"default over maximum", func(c *Config) { c.Defaults.Timeout = time.Hour }, "Defaults: Timeout (1h0m0s) is over the operator maximum of 5m0s"},
		{"no log lines", func(c *Config) { c.MaxLogLinesPerCall = 0 }, "must be positive"},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			cfg := DefaultConfig()
			tt.change(&cfg)
			err := cfg.Validate()
			if err == nil || !strings.Contains(err.Error(), tt.want) {
				t.Fatalf("got %v; want an error mentioning %q", err, tt.want)
			}
			if _, err := NewRuntime(context.Background(), cfg); err == nil {
				t.Fatal("NewRuntime accepted the config")
			}
		})
	}
}

func TestGRPCStatus(t *testing.T) {
	tests := []struct {
		err  error
		want codes.Code
	}{
		{nil, codes.OK},
		{ErrTimeout, codes.DeadlineExceeded},
		{ErrMemoryLimit, codes.ResourceExhausted},
		{ErrOutputTooLarge, codes.ResourceExhausted},
		{ErrBusy, codes.ResourceExhausted},
		{ErrInputTooLarge, codes.InvalidArgument},
		{ErrTrap, codes.Aborted},
		{ErrCanceled, codes.Canceled},
		{ErrClosed, codes.Unavailable},
		{&GuestError{Message: "no such user"}, codes.Unknown},
		{&GuestError{Message: "invalid argument: argument 1 (int): not a number"}, codes.InvalidArgument},
		{errors.New("something else"), codes.Unknown},
	}
	for _, tt := range tests {
		st := childproc.GRPCStatus(tt.err)
		if st.Code() != tt.want {
			t.Errorf("childproc.GRPCStatus(%v) = %v; want %v", tt.err, st.Code(), tt.want)
		}
		if tt.err != nil && st.Message() != tt.err.Error() {
			t.Errorf("childproc.GRPCStatus(%v) message %q", tt.err, st.Message())
		}
	}
}

func TestInputTooLarge(t *testing.T) {
	r := newTestRuntime(t, DefaultConfig())
	m := load(t, r, guestWasm(t, hostileGuest), Spec{Export: "echo", Limits: Limits{MaxInput: 1 * KiB}})
	_, err := m.Call(context.Background(), make([]byte, 1025))
	if !errors.Is(err, ErrInputTooLarge) || !strings.Contains(err.Error(), "1025 bytes, over this function's limit of 1 KiB") {
		t.Fatalf("got %v; want ErrInputTooLarge", err)
	}
	if got := call(t, m, strings.Repeat("z", 1024)); len(got) != 1024 {
		t.Errorf("echo of 1 KiB returned %d bytes", len(got))
	}
	if s := m.Stats(); s.Calls != 1 {
		t.Errorf("stats %+v: the refused call ran", s)
	}
}
