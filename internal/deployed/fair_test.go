package deployed_test

import (
	"context"
	"crypto/sha256"
	"encoding/hex"
	"encoding/json"
	"sync"
	"testing"
	"time"

	"google.golang.org/grpc/codes"
	"google.golang.org/grpc/status"

	v1 "github.com/hivemind/taskworker/api/taskworker/v1"
	"github.com/hivemind/taskworker/internal/childproc"
	"github.com/hivemind/taskworker/internal/deployed"
)

// TestWasmFloodDelaysOnlyTheFlooder: eve floods the worker with spinning
// WebAssembly calls of several functions, many more than her share of the
// worker's WebAssembly calls; she holds her share, the rest of her calls
// wait, and bob's call runs, each in real child processes.
func TestWasmFloodDelaysOnlyTheFlooder(t *testing.T) {
	const slots = 4
	r, _, _ := newRunner(t, deployed.Config{MaxWasmCalls: slots, ModuleIdleTimeout: -1})
	wasm := guest(t, "./internal/sandbox/testdata/hostile")
	sum := sha256.Sum256(wasm)
	sha := hex.EncodeToString(sum[:])
	source := func(context.Context, string) ([]byte, error) { return wasm, nil }
	deployment := func(name, export, owner string, timeout time.Duration) *v1.Deployment {
		return &v1.Deployment{
			Name: name, Version: 1, ModuleSha256: sha, Export: export, Runtime: v1.Runtime_RUNTIME_WASM, Owner: owner,
			Limits: &v1.Limits{Concurrency: 8, MemoryBytes: 64 << 20, TimeoutMs: timeout.Milliseconds()},
		}
	}
	ctx := ctxTimeout(t, 10*time.Minute) // the first load compiles the module: slow under -race
	echo := deployment("echo", "echo", "bob", 30*time.Second)
	if _, err := r.Call(ctx, "bob", echo, []byte(`"warm"`), source); err != nil {
		t.Fatal(err)
	}

	flood, stop := context.WithCancel(ctx)
	var wg sync.WaitGroup
	defer func() {
		stop()
		wg.Wait()
	}()
	const floodCalls = 12
	for i := range floodCalls {
		// Two functions: the worker's bound is over all of them.
		spin := deployment([]string{"spin", "spin2"}[i%2], "spin", "eve", 5*time.Minute)
		wg.Go(func() {
			_, err := r.Call(flood, "eve", spin, nil, source)
			if code := status.Code(err); code != codes.Canceled && code != codes.ResourceExhausted {
				t.Errorf("a flood call ended with %v, want it canceled", err)
			}
		})
	}
	share := childproc.DefaultPerTenant(slots)
	for st := r.WasmCalls(); st.Held != share || st.Waiting != floodCalls-share; st = r.WasmCalls() {
		if ctx.Err() != nil {
			t.Fatalf("the flood did not settle: %+v", st)
		}
		time.Sleep(10 * time.Millisecond)
	}
	for range 3 {
		// Eve's calls spin for minutes: bob's succeeds only if it does not
		// wait for one of them.
		callCtx, cancel := context.WithTimeout(ctx, 30*time.Second)
		out, err := r.Call(callCtx, "bob", echo, []byte(`"hello"`), source)
		cancel()
		var got string
		if err == nil {
			err = json.Unmarshal(out, &got)
		}
		if err != nil || got != "hello" {
			t.Fatalf("bob's call under the flood: %s, %v", out, err)
		}
	}
	if held := r.WasmCalls().Held; held != share {
		t.Fatalf("%d calls hold slots after bob's, want eve's %d", held, share)
	}
}
