package deployed_test

import (
	"context"
	"crypto/sha256"
	"encoding/hex"
	"log/slog"
	"testing"
	"time"

	v1 "github.com/hivemind/taskworker/api/taskworker/v1"
	"github.com/hivemind/taskworker/internal/deployed"
)

// newRunner starts a Runner whose WebAssembly calls run in child
// processes of this test binary, and the deployments of the Go guest's
// exports under limits.
func newRunner(t *testing.T, cfg deployed.Config) (*deployed.Runner, func(export string) *v1.Deployment, func(context.Context, string) ([]byte, error)) {
	t.Helper()
	cfg.CacheDir, cfg.WasmCommand = wasmCache, wasmCommand
	cfg.Logger = slog.New(slog.DiscardHandler)
	r, err := deployed.New(context.Background(), cfg)
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { r.Close(context.Background()) })
	wasm := guest(t, "./examples/go-add")
	sum := sha256.Sum256(wasm)
	sha := hex.EncodeToString(sum[:])
	deployment := func(export string) *v1.Deployment {
		return &v1.Deployment{
			Name: "go_" + export, Version: 1, ModuleSha256: sha, Export: export, Runtime: v1.Runtime_RUNTIME_WASM, Owner: "bob",
			Limits: &v1.Limits{Concurrency: 1, MemoryBytes: 64 << 20, TimeoutMs: 30000},
		}
	}
	source := func(context.Context, string) ([]byte, error) { return wasm, nil }
	return r, deployment, source
}

// TestIdleModulesAreUnloaded: a version not called for the idle timeout
// is unloaded, its processes stopped; the next call loads it again.
func TestIdleModulesAreUnloaded(t *testing.T) {
	r, deployment, source := newRunner(t, deployed.Config{ModuleIdleTimeout: 300 * time.Millisecond})
	ctx := ctxTimeout(t, 10*time.Minute) // the first load compiles the module: slow under -race
	d := deployment("add")
	if out, err := r.Call(ctx, "alice", d, []byte("[1, 2]"), source); err != nil || string(out) != "3" {
		t.Fatalf("add(1, 2) = %s, %v", out, err)
	}
	for r.Stats().Modules != 0 {
		if ctx.Err() != nil {
			t.Fatalf("the idle version stayed loaded: %+v", r.Stats())
		}
		time.Sleep(50 * time.Millisecond)
	}
	if r.Unloaded() != 1 || len(r.Compiled()) != 0 {
		t.Fatalf("unloaded %d, compiled %v", r.Unloaded(), r.Compiled())
	}
	if out, err := r.Call(ctx, "alice", d, []byte("[2, 2]"), source); err != nil || string(out) != "4" {
		t.Fatalf("after the unload, add(2, 2) = %s, %v", out, err)
	}
}

// TestModuleMemoryBound: with room for one loaded version, calling a
// second unloads the first, the least recently called; a version being
// called stays.
func TestModuleMemoryBound(t *testing.T) {
	wasm := guest(t, "./examples/go-add")
	// One version: its bytes and compiled code, and one process of
	// 64 MiB; not two.
	one := 4*int64(len(wasm)) + 64<<20
	r, deployment, source := newRunner(t, deployed.Config{MaxModuleMemory: one + one/2, ModuleIdleTimeout: -1})
	ctx := ctxTimeout(t, 10*time.Minute) // the first load compiles the module: slow under -race
	for i, export := range []string{"add", "divide", "add"} {
		if _, err := r.Call(ctx, "alice", deployment(export), []byte("[4, 2]"), source); err != nil {
			t.Fatalf("%s: %v", export, err)
		}
		if st := r.Stats(); st.Modules != 1 || r.Unloaded() != uint64(i) {
			t.Fatalf("after calling %s: %d versions loaded, %d unloaded; want 1 and %d", export, st.Modules, r.Unloaded(), i)
		}
	}
}
