package deployed_test

import (
	"context"
	"fmt"
	"os"
	"os/exec"
	"path/filepath"
	"slices"
	"strings"
	"sync"
	"sync/atomic"
	"testing"
	"time"

	"google.golang.org/grpc/codes"
	"google.golang.org/grpc/status"

	"github.com/hivemind/taskworker"
	v1 "github.com/hivemind/taskworker/api/taskworker/v1"
	"github.com/hivemind/taskworker/internal/cluster"
	"github.com/hivemind/taskworker/internal/sandbox"
	"github.com/hivemind/taskworker/internal/starlarkrun"
)

func ctxTimeout(t *testing.T, d time.Duration) context.Context {
	ctx, cancel := context.WithTimeout(context.Background(), d)
	t.Cleanup(cancel)
	return ctx
}

// wasmCache is shared by every test's cluster: each module compiles once.
var wasmCache string

var starlarkCommand, wasmCommand []string

func TestMain(m *testing.M) {
	// The workers' Starlark children are this test binary, re-executed.
	if len(os.Args) > 1 && os.Args[1] == starlarkrun.ChildArg {
		os.Exit(starlarkrun.Main())
	}
	if len(os.Args) > 1 && os.Args[1] == sandbox.ChildArg {
		os.Exit(sandbox.ChildMain())
	}
	exe, err := os.Executable()
	if err != nil {
		fmt.Fprintln(os.Stderr, err)
		os.Exit(1)
	}
	starlarkCommand = []string{exe, starlarkrun.ChildArg}
	wasmCommand = []string{exe, sandbox.ChildArg}
	dir, err := os.MkdirTemp("", "tw-wasm-cache-")
	if err != nil {
		fmt.Fprintln(os.Stderr, err)
		os.Exit(1)
	}
	wasmCache = dir
	code := m.Run()
	os.RemoveAll(dir)
	os.Exit(code)
}

// guest builds a Go guest package of this repository for wasip1, once.
func guest(t testing.TB, pkg string) []byte { return cluster.BuildGuest(t, pkg) }

// extismPlugin reads one of the test plugins shipped in the go-sdk module.
func extismPlugin(t testing.TB, name string) []byte {
	t.Helper()
	dir, err := exec.Command("go", "list", "-m", "-f", "{{.Dir}}", "github.com/extism/go-sdk").Output()
	if err != nil {
		t.Fatal(err)
	}
	b, err := os.ReadFile(filepath.Join(strings.TrimSpace(string(dir)), "wasm", name))
	if err != nil {
		t.Fatal(err)
	}
	return b
}

func TestDeployAndCallThroughThePool(t *testing.T) {
	c := cluster.New(t, cluster.Options{Workers: 1, Sandbox: true, WasmCache: wasmCache, StarlarkCommand: starlarkCommand, WasmCommand: wasmCommand})
	cl := c.Client(0)
	ctx := ctxTimeout(t, 3*time.Minute)
	if _, err := cl.Deploy(ctx, "count_vowels", extismPlugin(t, "count_vowels.wasm"), taskworker.DeploySpec{Idempotent: true}); err != nil {
		t.Fatal(err)
	}
	// The plugin's input is the JSON array of arguments, unchanged.
	out, err := cl.Call(ctx, "count_vowels", "Hello, World!")
	if err != nil || !strings.Contains(string(out), `"count":3`) {
		t.Fatalf("count_vowels: %s, %v", out, err)
	}
	if _, err := cl.Deploy(ctx, "hello_haskell", extismPlugin(t, "hello_haskell.wasm"), taskworker.DeploySpec{Export: "testing"}); err != nil {
		t.Fatal(err)
	}
	if out, err := cl.Call(ctx, "hello_haskell", "TaskWorker"); err != nil || !strings.Contains(string(out), "TaskWorker") {
		t.Fatalf("hello_haskell: %q, %v", out, err)
	}
	// The Go guest, built here with the guest SDK.
	addWasm := guest(t, "./examples/go-add")
	for _, fn := range []string{"add", "divide"} {
		if _, err := cl.Deploy(ctx, "go_"+fn, addWasm, taskworker.DeploySpec{Export: fn}); err != nil {
			t.Fatal(err)
		}
	}
	if out, err := cl.Call(ctx, "go_add", 1, 2); err != nil || string(out) != "3" {
		t.Fatalf("go_add(1, 2) = %s, %v", out, err)
	}
	_, err = cl.Call(ctx, "go_divide", 1, 0)
	if st := status.Convert(err); st.Code() == codes.OK || !strings.Contains(st.Message(), "division by zero") {
		t.Fatalf("go_divide(1, 0): %v", err)
	}
	if _, err := cl.Call(ctx, "go_add", "x"); status.Code(err) != codes.InvalidArgument {
		t.Fatalf("go_add with a bad argument: %v", err)
	}
	fs, _ := cl.Functions(ctx)
	runtimes := map[string]string{}
	for _, f := range fs {
		runtimes[f.Name] = f.Runtime
	}
	if runtimes["go_add"] != "wasm" || runtimes["add"] != "go" {
		t.Errorf("functions lists runtimes %v", runtimes)
	}
}

func TestBadModulesFailAtDeploy(t *testing.T) {
	c := cluster.New(t, cluster.Options{Workers: 1, Sandbox: true, WasmCache: wasmCache, StarlarkCommand: starlarkCommand, WasmCommand: wasmCommand})
	cl := c.Client(0)
	ctx := ctxTimeout(t, time.Minute)
	cv := extismPlugin(t, "count_vowels.wasm")
	wasm := taskworker.DeploySpec{Runtime: v1.Runtime_RUNTIME_WASM}
	tests := []struct {
		name   string
		module []byte
		spec   taskworker.DeploySpec
		msg    string
	}{
		{"not wasm", []byte("MZ\x90\x00 a Windows program"), wasm, "not WebAssembly"},
		{"truncated", cv[:len(cv)/2], wasm, "cannot be deployed"},
		{"missing export", cv, taskworker.DeploySpec{Export: "nope"}, "nope"},
		{"imports a host function we do not provide", extismPlugin(t, "host.wasm"), taskworker.DeploySpec{Export: "run_test"}, "import"},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			_, err := cl.Deploy(ctx, "bad", tt.module, tt.spec)
			if st := status.Convert(err); st.Code() != codes.InvalidArgument || !strings.Contains(st.Message(), tt.msg) {
				t.Errorf("got %v; want InvalidArgument mentioning %q", err, tt.msg)
			}
		})
	}
}

// Calls during a redeploy all succeed, each served by exactly one version.
func TestVersionSwitchUnderLoad(t *testing.T) {
	c := cluster.New(t, cluster.Options{Workers: 2, Sandbox: true, WasmCache: wasmCache, StarlarkCommand: starlarkCommand, WasmCommand: wasmCommand})
	cl := c.Client(0)
	ctx := ctxTimeout(t, 3*time.Minute)
	// Two versions of "greet" that answer differently: the Go guest's
	// hello, then the Haskell plugin.
	if _, err := cl.Deploy(ctx, "greet", guest(t, "./examples/go-add"), taskworker.DeploySpec{Export: "hello"}); err != nil {
		t.Fatal(err)
	}
	first, err := cl.Call(ctx, "greet", "you") // loaded on a worker
	if err != nil {
		t.Fatal(err)
	}
	var calls, failures atomic.Int64
	answers := sync.Map{}
	stop := make(chan struct{})
	var wg sync.WaitGroup
	for range 8 {
		wg.Go(func() {
			for {
				select {
				case <-stop:
					return
				default:
				}
				out, err := cl.Call(ctx, "greet", "you")
				calls.Add(1)
				if err != nil {
					failures.Add(1)
					t.Errorf("call during a redeploy: %v", err)
					return
				}
				answers.Store(string(out), true)
			}
		})
	}
	for calls.Load() < 20 && ctx.Err() == nil {
		time.Sleep(10 * time.Millisecond)
	}
	if _, err := cl.Deploy(ctx, "greet", extismPlugin(t, "hello_haskell.wasm"), taskworker.DeploySpec{Export: "testing"}); err != nil {
		t.Error(err)
	}
	// Calls go on until the new version has answered (it loads on first
	// call), then a little longer.
	for ctx.Err() == nil && failures.Load() == 0 {
		n := 0
		answers.Range(func(k, _ any) bool { n++; return true })
		if n > 1 {
			break
		}
		time.Sleep(10 * time.Millisecond)
	}
	time.Sleep(200 * time.Millisecond)
	close(stop)
	wg.Wait()
	var got []string
	answers.Range(func(k, _ any) bool { got = append(got, k.(string)); return true })
	if failures.Load() != 0 || len(got) != 2 || !slices.Contains(got, string(first)) {
		t.Fatalf("%d calls, %d failed; distinct answers %q (want one per version)", calls.Load(), failures.Load(), got)
	}
}

// A worker restarted over its data directory loads deployed code from its
// compilation cache instead of compiling again.
func TestRestartReusesCompiledModules(t *testing.T) {
	c := cluster.New(t, cluster.Options{Workers: 1, Sandbox: true, WasmCache: wasmCache, StarlarkCommand: starlarkCommand, WasmCommand: wasmCommand})
	cl := c.Client(0)
	ctx := ctxTimeout(t, 3*time.Minute)
	if _, err := cl.Deploy(ctx, "go_add", guest(t, "./examples/go-add"), taskworker.DeploySpec{Export: "add"}); err != nil {
		t.Fatal(err)
	}
	if _, err := cl.Call(ctx, "go_add", 1, 1); err != nil {
		t.Fatal(err)
	}
	c.StopWorker(0)
	c.RestartWorker(0)
	c.WaitWorkers(1)
	if _, err := cl.Call(ctx, "go_add", 2, 2); err != nil {
		t.Fatal(err)
	}
	if st := c.Runners[0].Stats(); st.Compiled != 0 || st.FromDisk != 1 {
		t.Fatalf("after a restart: %+v; want the module from the disk cache, no compile", st)
	}
}

func TestStarlarkThroughThePool(t *testing.T) {
	c := cluster.New(t, cluster.Options{Workers: 1, Sandbox: true, WasmCache: wasmCache, StarlarkCommand: starlarkCommand, WasmCommand: wasmCommand})
	cl := c.Client(0)
	ctx := ctxTimeout(t, 2*time.Minute)
	script, err := os.ReadFile(filepath.Join("..", "..", "examples", "starlark", "orders.star"))
	if err != nil {
		t.Fatal(err)
	}
	for name, fn := range map[string]string{"total": "total", "star_add": "add"} {
		if _, err := cl.Deploy(ctx, name, script, taskworker.DeploySpec{Runtime: v1.Runtime_RUNTIME_STARLARK, Export: fn}); err != nil {
			t.Fatal(err)
		}
	}
	if out, err := cl.Call(ctx, "star_add", 1, 2); err != nil || string(out) != "3" {
		t.Fatalf("add(1, 2) = %s, %v", out, err)
	}
	out, err := cl.CallJSON(ctx, "total", []byte(`[[{"item": "tea", "price": 2.5, "quantity": 4}, {"item": "tea", "price": 1, "quantity": 1}]]`))
	if err != nil || string(out) != `{"items":{"tea":11.0},"total":11.0}` && string(out) != `{"items":{"tea":11},"total":11}` {
		t.Fatalf("total = %s, %v", out, err)
	}

	star := taskworker.DeploySpec{Runtime: v1.Runtime_RUNTIME_STARLARK, Timeout: 10 * time.Second, Memory: 64 << 20}
	hostile := []struct {
		name, source string
		code         codes.Code
	}{
		{"infinite loop", "def f():\n    while True:\n        pass\n", codes.DeadlineExceeded},
		{"a gigabyte string", "def f():\n    return len(\"x\" * 1000000000)\n", codes.ResourceExhausted},
		{"list of lists", "def f():\n    x = [[1] * 1000]\n    for i in range(100000):\n        x.append(list(x[-1]))\n    return len(x)\n", codes.ResourceExhausted},
		{"recursion", "def f():\n    return f()\n", codes.Unknown},
		{"huge output", "def f():\n    return \"y\" * 5000000\n", codes.ResourceExhausted},
	}
	for _, h := range hostile {
		t.Run(h.name, func(t *testing.T) {
			name := "h_" + strings.ReplaceAll(h.name, " ", "_")
			spec := star
			spec.Export = "f"
			if h.code == codes.DeadlineExceeded {
				spec.Timeout = 500 * time.Millisecond
			}
			if _, err := cl.Deploy(ctx, name, []byte(h.source), spec); err != nil {
				t.Fatal(err)
			}
			_, err := cl.Call(ctx, name)
			if code := status.Code(err); code == codes.OK || h.code != codes.Unknown && code != h.code {
				t.Fatalf("got %v; want %s", err, h.code)
			}
			// The worker still serves everyone else.
			if out, err := cl.Call(ctx, "star_add", 2, 2); err != nil || string(out) != "4" {
				t.Fatalf("after %s: add(2, 2) = %s, %v", h.name, out, err)
			}
		})
	}

	for _, bad := range []struct{ name, source, export, msg string }{
		{"syntax error", "def f(:\n", "f", "f.star:1"},
		{"no such function", "def g():\n    pass\n", "f", "f"},
		{"power operator", "def f():\n    return 10**9\n", "f", "f.star"},
	} {
		_, err := cl.Deploy(ctx, "bad", []byte(bad.source), taskworker.DeploySpec{Runtime: v1.Runtime_RUNTIME_STARLARK, Export: bad.export})
		if st := status.Convert(err); st.Code() != codes.InvalidArgument || !strings.Contains(st.Message(), bad.msg) {
			t.Errorf("deploying a script with a %s: %v", bad.name, err)
		}
	}
}
