package sandbox

import (
	"bytes"
	"context"
	"errors"
	"os"
	"path/filepath"
	"testing"
	"time"

	extism "github.com/extism/go-sdk"
	"github.com/tetratelabs/wazero"
)

// TestKernelIsGoSDKs checks that the embedded Extism kernel is the one of
// the go-sdk in go.mod, against which TestExtismConformance compares.
func TestKernelIsGoSDKs(t *testing.T) {
	dir, err := extismDir()
	if err != nil {
		t.Fatal(err)
	}
	want, err := os.ReadFile(filepath.Join(dir, "extism-runtime.wasm"))
	if err != nil {
		t.Fatal(err)
	}
	if !bytes.Equal(kernelWasm, want) {
		t.Fatalf("extism-kernel.wasm differs from %s/extism-runtime.wasm: copy it over", dir)
	}
}

// TestExtismConformance runs Extism's own fixture plugins (Rust, TinyGo,
// Haskell PDKs; go-sdk's wasm directory), those that use the kernel, vars,
// the config and HTTP, through go-sdk and through this package, three calls on one instance each, and expects the same: the
// same output, the same error set by the guest, a failure where go-sdk
// fails.
func TestExtismConformance(t *testing.T) {
	ctx := context.Background()
	r := newTestRuntime(t, DefaultConfig())
	for _, tt := range []struct{ file, export, input string }{
		{"config.wasm", "run_test", ""},
		{"count_vowels.wasm", "count_vowels", "Hello, World"},
		{"fail.wasm", "run_test", ""},
		{"hello_haskell.wasm", "testing", "John"},
		{"http.wasm", "run_test", ""},
		{"input_offset.wasm", "input_offset_length", "0123456789abcdef0123"},
		{"var.wasm", "run_test", ""},
	} {
		t.Run(tt.file, func(t *testing.T) {
			wasm := extismPlugin(t, tt.file)
			ref, err := extism.NewPlugin(ctx, extism.Manifest{Wasm: []extism.Wasm{extism.WasmData{Data: wasm}}},
				// The interpreter: it compiles in a fraction of the time.
				extism.PluginConfig{EnableWasi: true, RuntimeConfig: wazero.NewRuntimeConfigInterpreter()}, nil)
			if err != nil {
				t.Fatal(err)
			}
			defer ref.Close(ctx)
			m := load(t, r, wasm, Spec{Export: tt.export, Concurrency: 1, Limits: Limits{Timeout: time.Minute}})
			for i := range 3 {
				_, want, wantErr := ref.Call(tt.export, []byte(tt.input))
				got, err := m.Call(ctx, []byte(tt.input))
				var guest *GuestError
				switch {
				case wantErr == nil && (err != nil || !bytes.Equal(got, want)):
					t.Fatalf("call %d: got %q, %v; go-sdk returns %q", i, got, err, want)
				case wantErr != nil && err == nil:
					t.Fatalf("call %d: got %q; go-sdk fails: %v", i, got, wantErr)
				case wantErr != nil && wantErr.Error() == ref.GetError() &&
					(!errors.As(err, &guest) || guest.Message != wantErr.Error()):
					t.Fatalf("call %d: got %v; go-sdk returns the guest's error %q", i, err, wantErr)
				}
				t.Logf("call %d: %q, %v", i, got, err)
			}
		})
	}
}
