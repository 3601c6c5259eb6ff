package sandbox

import (
	"bytes"
	"context"
	"fmt"
	"log/slog"
	"os"
	"os/exec"
	"path/filepath"
	"runtime"
	"slices"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/hivemind/taskworker/internal/childproc/childproctest"
)

// buildDir holds the guests built by this test binary, each built once.
var buildDir string

func TestMain(m *testing.M) {
	childproctest.Main()
	if len(os.Args) > 1 && os.Args[1] == ChildArg {
		os.Exit(ChildMain())
	}
	dir, err := os.MkdirTemp("", "sandbox-guests-")
	if err != nil {
		fmt.Fprintln(os.Stderr, err)
		os.Exit(1)
	}
	buildDir = dir
	code := m.Run()
	os.RemoveAll(dir)
	os.Exit(code)
}

var builds sync.Map // package path -> *guestBuild

type guestBuild struct {
	once sync.Once
	wasm []byte
	err  error
}

// moduleRoot is the repository root, two levels above this package.
func moduleRoot(t testing.TB) string {
	root, err := filepath.Abs(filepath.Join("..", ".."))
	if err != nil {
		t.Fatal(err)
	}
	return root
}

// guestWasm builds the Go guest at pkg (relative to the module root) as a
// wasip1 reactor, once per test binary, and returns its bytes.
func guestWasm(t testing.TB, pkg string) []byte {
	t.Helper()
	v, _ := builds.LoadOrStore(pkg, &guestBuild{})
	b := v.(*guestBuild)
	b.once.Do(func() {
		out := filepath.Join(buildDir, strings.NewReplacer("/", "_", ".", "_").Replace(pkg)+".wasm")
		cmd := exec.Command("go", "build", "-buildmode=c-shared", "-o", out, pkg)
		cmd.Dir = moduleRoot(t)
		// -race, if set for the tests through GOFLAGS, does not exist
		// for wasm.
		flags := slices.DeleteFunc(strings.Fields(os.Getenv("GOFLAGS")), func(f string) bool { return f == "-race" })
		cmd.Env = append(os.Environ(), "GOOS=wasip1", "GOARCH=wasm", "CGO_ENABLED=0", "GOFLAGS="+strings.Join(flags, " "))
		if msg, err := cmd.CombinedOutput(); err != nil {
			b.err = fmt.Errorf("building %s: %v\n%s", pkg, err, msg)
			return
		}
		b.wasm, b.err = os.ReadFile(out)
	})
	if b.err != nil {
		t.Fatal(b.err)
	}
	return b.wasm
}

var extismDir = sync.OnceValues(func() (string, error) {
	out, err := exec.Command("go", "list", "-m", "-f", "{{.Dir}}", "github.com/extism/go-sdk").Output()
	return strings.TrimSpace(string(out)), err
})

// extismPlugin reads one of the test plugins that ship in the go-sdk
// module, from the module cache.
func extismPlugin(t testing.TB, name string) []byte {
	t.Helper()
	dir, err := extismDir()
	if err != nil || dir == "" {
		t.Fatalf("finding github.com/extism/go-sdk in the module cache: %v", err)
	}
	b, err := os.ReadFile(filepath.Join(dir, "wasm", name))
	if err != nil {
		t.Fatal(err)
	}
	return b
}

// logBuffer is a slog handler's output, safe to read while guests log.
type logBuffer struct {
	mu  sync.Mutex
	buf bytes.Buffer
}

func (b *logBuffer) Write(p []byte) (int, error) {
	b.mu.Lock()
	defer b.mu.Unlock()
	return b.buf.Write(p)
}

func (b *logBuffer) String() string {
	b.mu.Lock()
	defer b.mu.Unlock()
	return b.buf.String()
}

// testHost returns a Host logging into a buffer the test can read.
func testHost() (Host, *logBuffer) {
	buf := &logBuffer{}
	return SlogHost{Logger: slog.New(slog.NewTextHandler(buf, &slog.HandlerOptions{Level: slog.LevelDebug}))}, buf
}

// isolated is cfg with calls in child processes: this test binary, which
// runs ChildMain when given ChildArg (TestMain).
func isolated(t testing.TB, cfg Config) Config {
	t.Helper()
	exe, err := os.Executable()
	if err != nil {
		t.Fatal(err)
	}
	cfg.ChildCommand = []string{exe, ChildArg}
	return cfg
}

// isolations runs f once with calls in this process and once in child
// processes.
func isolations(t *testing.T, cfg Config, f func(t *testing.T, cfg Config)) {
	t.Run("in-process", func(t *testing.T) { f(t, cfg) })
	t.Run("child-process", func(t *testing.T) { f(t, isolated(t, cfg)) })
}

// newTestRuntime starts a Runtime that the test closes, and checks then
// that it was left with no module open.
func newTestRuntime(t testing.TB, cfg Config) *Runtime {
	t.Helper()
	if cfg.Logger == nil {
		cfg.Logger = slog.New(slog.NewTextHandler(&logBuffer{}, nil))
	}
	if cfg.CacheDir == "" {
		// One cache for the whole test binary: each guest is compiled once.
		cfg.CacheDir = filepath.Join(buildDir, "cache")
	}
	goroutines := runtime.NumGoroutine()
	r, err := NewRuntime(context.Background(), cfg)
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() {
		ctx, cancel := context.WithTimeout(context.Background(), 10*time.Second)
		defer cancel()
		if err := r.Close(ctx); err != nil {
			t.Errorf("closing the runtime: %v", err)
		}
		if n := r.Stats().Modules; n != 0 {
			t.Errorf("%d modules still open after Runtime.Close", n)
		}
		checkGoroutines(t, goroutines)
	})
	return r
}

// checkGoroutines fails the test if more than want goroutines are still
// running a few seconds on: a call, a watcher or a drain left behind.
func checkGoroutines(t testing.TB, want int) {
	t.Helper()
	deadline := time.Now().Add(5 * time.Second)
	for runtime.NumGoroutine() > want {
		if time.Now().After(deadline) {
			buf := make([]byte, 1<<20)
			t.Errorf("%d goroutines running, %d before the runtime started:\n%s",
				runtime.NumGoroutine(), want, buf[:runtime.Stack(buf, true)])
			return
		}
		time.Sleep(10 * time.Millisecond)
	}
}

// load loads wasm with spec, failing the test on error.
func load(t testing.TB, r *Runtime, wasm []byte, spec Spec) *Module {
	t.Helper()
	host, _ := testHost()
	m, err := r.Load(context.Background(), wasm, spec, host)
	if err != nil {
		t.Fatalf("loading %q: %v", spec.Export, err)
	}
	return m
}

// callHolding starts a call of m with input and returns once it runs (holds
// one of m's turns), with a channel for its error: the calls made after it
// queue behind it.
func callHolding(ctx context.Context, m *Module, input []byte) <-chan error {
	done := make(chan error, 1)
	go func() {
		_, err := m.Call(ctx, input)
		done <- err
	}()
	for m.running.Load() == 0 {
		time.Sleep(time.Millisecond)
	}
	return done
}

// call calls m with a generous context, failing the test on error.
func call(t testing.TB, m *Module, input string) string {
	t.Helper()
	ctx, cancel := context.WithTimeout(context.Background(), 30*time.Second)
	defer cancel()
	out, err := m.Call(ctx, []byte(input))
	if err != nil {
		t.Fatalf("calling %q with %q: %v", m.Spec().Export, input, err)
	}
	return string(out)
}
