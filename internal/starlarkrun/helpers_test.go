package starlarkrun

import (
	"context"
	"encoding/json"
	"log/slog"
	"os"
	"runtime"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/hivemind/taskworker/internal/childproc/childproctest"
)

// TestMain runs the test binary as a child when a Pool starts it with
// ChildArg, the way the worker binary does.
func TestMain(m *testing.M) {
	childproctest.Main()
	if len(os.Args) > 1 && os.Args[1] == ChildArg {
		os.Exit(Main())
	}
	os.Exit(m.Run())
}

// testConfig is a small pool's configuration whose children are this test
// binary.
func testConfig(t testing.TB) Config {
	t.Helper()
	exe, err := os.Executable()
	if err != nil {
		t.Fatal(err)
	}
	cfg := DefaultConfig()
	cfg.Command = []string{exe, ChildArg}
	cfg.MaxChildren = 4
	cfg.WarmChildren = 1
	cfg.Logger = slog.New(slog.NewTextHandler(testLogWriter{t}, &slog.HandlerOptions{Level: slog.LevelWarn}))
	return cfg
}

// newPool starts a pool and, when the test ends, closes it and checks that
// every child it started has exited and no goroutine of its is left.
func newPool(t testing.TB, cfg Config) *Pool {
	t.Helper()
	goroutines := runtime.NumGoroutine()
	p, err := New(cfg)
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() {
		p.Close()
		for _, proc := range p.sup.Children() {
			if proc.Alive() {
				t.Errorf("child %d still alive after Close", proc.ready.PID)
			}
		}
		// context.AfterFunc's goroutines may still be returning.
		deadline := time.Now().Add(5 * time.Second)
		for runtime.NumGoroutine() > goroutines && time.Now().Before(deadline) {
			time.Sleep(10 * time.Millisecond)
		}
		if n := runtime.NumGoroutine(); n > goroutines {
			buf := make([]byte, 1<<16)
			t.Errorf("%d goroutines after Close, %d before New:\n%s", n, goroutines, buf[:runtime.Stack(buf, true)])
		}
	})
	return p
}

// call calls fn of src with args (JSON) and default limits.
func call(t testing.TB, p *Pool, src, fn, args string) (string, error) {
	t.Helper()
	ctx, cancel := context.WithTimeout(context.Background(), 30*time.Second)
	defer cancel()
	out, err := p.Call(ctx, Request{Name: "test.star", Source: []byte(src), Function: fn, Args: json.RawMessage(args)})
	return string(out), err
}

// mustCall is call that fails the test on error, and checks the result.
func mustCall(t testing.TB, p *Pool, src, fn, args, want string) {
	t.Helper()
	got, err := call(t, p, src, fn, args)
	if err != nil {
		t.Fatalf("%s(%s): %v", fn, args, err)
	}
	if got != want {
		t.Fatalf("%s(%s) = %s, want %s", fn, args, got, want)
	}
}

const addScript = "def add(a, b):\n    return a + b\n"

// testLogWriter sends the pool's log to the test's.
type testLogWriter struct{ t testing.TB }

func (w testLogWriter) Write(b []byte) (int, error) {
	w.t.Log(strings.TrimSpace(string(b)))
	return len(b), nil
}

// logLines is a Host that keeps what it is given.
type logLines struct {
	mu    sync.Mutex
	lines []string
}

func (l *logLines) Log(_ context.Context, level slog.Level, msg string) {
	l.mu.Lock()
	defer l.mu.Unlock()
	l.lines = append(l.lines, level.String()+" "+msg)
}

func (l *logLines) get() []string {
	l.mu.Lock()
	defer l.mu.Unlock()
	return append([]string(nil), l.lines...)
}
