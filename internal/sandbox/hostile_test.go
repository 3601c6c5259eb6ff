package sandbox

import (
	"context"
	"encoding/json"
	"errors"
	"net"
	"net/http"
	"net/http/httptest"
	"strconv"
	"strings"
	"sync"
	"sync/atomic"
	"testing"
	"time"

	"google.golang.org/grpc/codes"

	"github.com/hivemind/taskworker/internal/childproc"
)

// TestHostile runs the hostile corpus: each case misbehaves in one way, must
// end with its own error and code (or harmlessly), and must leave the
// runtime serving good calls: the same module's well-behaved export, the go-add
// example, and the same misbehaving module again for cases that discard
// their instance.
func TestHostile(t *testing.T) { isolations(t, DefaultConfig(), testHostile) }

func testHostile(t *testing.T, cfg Config) {
	r := newTestRuntime(t, cfg)
	hostile := guestWasm(t, hostileGuest)
	good := load(t, r, hostile, Spec{Export: "ok"})
	add := load(t, r, guestWasm(t, goAdd), Spec{Export: "add"})

	// A server on this machine for the guest to try to reach.
	var hits atomic.Int64
	server := httptest.NewServer(http.HandlerFunc(func(w http.ResponseWriter, _ *http.Request) {
		hits.Add(1)
	}))
	defer server.Close()
	listener, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	defer listener.Close()
	var accepted atomic.Int64
	go func() {
		for {
			c, err := listener.Accept()
			if err != nil {
				return
			}
			accepted.Add(1)
			c.Close()
		}
	}()
	t.Setenv("TASKWORKER_SANDBOX_CANARY", "do-not-leak")
	free, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	freeAddr := free.Addr().String()
	free.Close()

	trapWasm := wasmModule{funcs: []wasmFunc{{export: "trap", results: []byte{i32}, body: []byte{0x00}}}}.bytes() // unreachable
	exitWasm := wasmModule{
		imports: []wasmImport{{module: "wasi_snapshot_preview1", name: "proc_exit", params: []byte{i32}}},
		funcs:   []wasmFunc{{export: "exit", results: []byte{i32}, body: []byte{0x41, 0x00, 0x10, 0x00, 0x41, 0x00}}}, // (call $proc_exit (i32.const 0)) (i32.const 0)
	}.bytes()
	spinWasm := wasmModule{funcs: []wasmFunc{{export: "spin", results: []byte{i32}, body: bodySpin}}}.bytes()
	recurseWasm := wasmModule{funcs: []wasmFunc{{export: "recurse", results: []byte{i32}, body: bodyRecurse}}}.bytes()
	growWasm := wasmModule{memoryPages: 1, funcs: []wasmFunc{{export: "grow", results: []byte{i32}, body: bodyGrowForever}}}.bytes()

	tests := []struct {
		name     string
		wasm     []byte
		spec     Spec
		input    string
		wantErr  error      // nil: the call succeeds, and check looks at the output
		wantCode codes.Code // of the error
		check    func(t *testing.T, m *Module, out string, err error)
	}{
		{name: "infinite loop (Go)", wasm: hostile, spec: Spec{Export: "spin", Limits: Limits{Timeout: 300 * time.Millisecond}},
			wantErr: ErrTimeout, wantCode: codes.DeadlineExceeded},
		{name: "infinite loop (wasm)", wasm: spinWasm, spec: Spec{Export: "spin", Limits: Limits{Timeout: 100 * time.Millisecond}},
			wantErr: ErrTimeout, wantCode: codes.DeadlineExceeded},
		{name: "memory growth (Go)", wasm: hostile, spec: Spec{Export: "grow", Limits: Limits{Memory: 32 * MiB}},
			wantErr: ErrMemoryLimit, wantCode: codes.ResourceExhausted,
			check: func(t *testing.T, m *Module, _ string, err error) {
				if !strings.Contains(err.Error(), "out of memory") {
					t.Errorf("error %q does not quote the guest's stderr", err)
				}
			}},
		{name: "memory growth (wasm)", wasm: growWasm, spec: Spec{Export: "grow", Limits: Limits{Memory: 4 * MiB}},
			wantErr: ErrMemoryLimit, wantCode: codes.ResourceExhausted},
		{name: "huge output", wasm: hostile, spec: Spec{Export: "output", Limits: Limits{MaxOutput: 1 * MiB}}, input: "[4194304]",
			wantErr: ErrOutputTooLarge, wantCode: codes.ResourceExhausted},
		{name: "output past the memory limit", wasm: hostile, spec: Spec{Export: "output", Limits: Limits{Memory: 16 * MiB}}, input: "[67108864]",
			wantErr: ErrMemoryLimit, wantCode: codes.ResourceExhausted},
		{name: "deep recursion (Go)", wasm: hostile, spec: Spec{Export: "recurse", Limits: Limits{Memory: 16 * MiB}},
			wantErr: ErrMemoryLimit, wantCode: codes.ResourceExhausted},
		{name: "deep recursion (wasm)", wasm: recurseWasm, spec: Spec{Export: "recurse"},
			wantErr: ErrTrap, wantCode: codes.Aborted},
		{name: "trap", wasm: trapWasm, spec: Spec{Export: "trap"},
			wantErr: ErrTrap, wantCode: codes.Aborted,
			check: func(t *testing.T, m *Module, _ string, err error) {
				if !strings.Contains(err.Error(), "unreachable") {
					t.Errorf("error %q does not name the trap", err)
				}
			}},
		{name: "panic (recovered by the guest SDK)", wasm: hostile, spec: Spec{Export: "panic"},
			wantErr: &GuestError{}, wantCode: codes.Unknown,
			check: func(t *testing.T, m *Module, _ string, err error) {
				if !strings.Contains(err.Error(), "boom") {
					t.Errorf("error %q does not quote the panic", err)
				}
			}},
		{name: "read /etc/passwd", wasm: hostile, spec: Spec{Export: "read_file"}, input: "/etc/passwd",
			wantErr: &GuestError{}, wantCode: codes.Unknown},
		{name: "read a relative path", wasm: hostile, spec: Spec{Export: "read_file"}, input: "go.mod",
			wantErr: &GuestError{}, wantCode: codes.Unknown},
		{name: "list /", wasm: hostile, spec: Spec{Export: "list_dir"}, input: "/",
			wantErr: &GuestError{}, wantCode: codes.Unknown},
		{name: "open a socket", wasm: hostile, spec: Spec{Export: "dial"}, input: listener.Addr().String(),
			wantErr: &GuestError{}, wantCode: codes.Unknown},
		{name: "listen on a socket", wasm: hostile, spec: Spec{Export: "listen"}, input: freeAddr,
			// Go's wasip1 port fakes sockets inside the guest: the
			// listener exists there only, and nothing listens on the host.
			check: func(t *testing.T, m *Module, _ string, _ error) {
				if c, err := net.DialTimeout("tcp", freeAddr, time.Second); err == nil {
					c.Close()
					t.Errorf("%s accepts connections after the guest listened on it", freeAddr)
				}
			}},
		{name: "Extism HTTP request", wasm: hostile, spec: Spec{Export: "extism_http"}, input: server.URL,
			wantErr: ErrTrap, wantCode: codes.Aborted,
			check: func(t *testing.T, m *Module, _ string, err error) {
				// Not a call through the pool: it has no way out at all.
				if !strings.Contains(err.Error(), "reach no host") {
					t.Errorf("error %q does not say the request was refused", err)
				}
			}},
		{name: "exit", wasm: exitWasm, spec: Spec{Export: "exit"},
			check: func(t *testing.T, m *Module, _ string, _ error) {
				// Exiting closed the instance; the next call gets a new one.
				if got := call(t, m, ""); got != "" {
					t.Errorf("second call returned %q", got)
				}
			}},
		{name: "environment and arguments", wasm: hostile, spec: Spec{Export: "env"},
			check: func(t *testing.T, m *Module, out string, _ error) {
				var got struct{ Environ, Args []string }
				if err := json.Unmarshal([]byte(out), &got); err != nil {
					t.Fatal(err)
				}
				if len(got.Environ) != 0 || len(got.Args) != 0 {
					t.Errorf("the guest sees environment %q and arguments %q; want none", got.Environ, got.Args)
				}
			}},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			m := load(t, r, tt.wasm, tt.spec)
			defer m.Close(context.Background())
			ctx, cancel := context.WithTimeout(context.Background(), 30*time.Second)
			defer cancel()
			start := time.Now()
			out, err := m.Call(ctx, []byte(tt.input))
			elapsed := time.Since(start)
			t.Logf("%v after %s", err, elapsed.Round(time.Millisecond))
			if strings.Contains(string(out), "root:") || strings.Contains(err2str(err), "root:") {
				t.Fatalf("host file contents reached the caller: %q %v", out, err)
			}
			switch want := tt.wantErr.(type) {
			case nil:
				if err != nil {
					t.Fatalf("call failed: %v", err)
				}
			case *GuestError:
				if !errors.As(err, &want) {
					t.Fatalf("got %q, %v; want the guest to report an error", out, err)
				}
			default:
				if !errors.Is(err, want) {
					t.Fatalf("got %q, %v; want %v", out, err, want)
				}
			}
			if err != nil && childproc.GRPCCode(err) != tt.wantCode {
				t.Errorf("code %v; want %v", childproc.GRPCCode(err), tt.wantCode)
			}
			if tt.check != nil {
				tt.check(t, m, string(out), err)
			}
			if errors.Is(err, ErrTimeout) && elapsed > tt.spec.Timeout+3*time.Second {
				t.Errorf("stopped after %s; the limit was %s", elapsed, tt.spec.Timeout)
			}
			if errors.Is(err, ErrTimeout) || errors.Is(err, ErrMemoryLimit) || errors.Is(err, ErrTrap) {
				// (Child processes keep a spare ready: idle ones are new.)
				if s := m.Stats(); s.Discarded != 1 || !cfg.isolated() && s.Idle != 0 {
					t.Errorf("stats %+v: the instance was not thrown away", s)
				}
			}

			// Contained: good calls still work, here and elsewhere.
			if got := call(t, good, ""); got != "ok" {
				t.Errorf("ok returned %q", got)
			}
			if got := call(t, add, "[2, 3]"); got != "5" {
				t.Errorf("add returned %q", got)
			}
		})
	}
	if n := hits.Load(); n != 0 {
		t.Errorf("the HTTP server got %d requests from guests", n)
	}
	if n := accepted.Load(); n != 0 {
		t.Errorf("the listener accepted %d connections from guests", n)
	}
}

func err2str(err error) string {
	if err == nil {
		return ""
	}
	return err.Error()
}

// TestMisbehavingCallEndsOnlyItself runs good calls while calls of the same
// module spin to their time limit: only the spinning calls fail.
func TestMisbehavingCallEndsOnlyItself(t *testing.T) {
	r := newTestRuntime(t, DefaultConfig())
	hostile := guestWasm(t, hostileGuest)
	spin := load(t, r, hostile, Spec{Export: "spin", Concurrency: 2, Limits: Limits{Timeout: 500 * time.Millisecond}})
	echo := load(t, r, hostile, Spec{Export: "echo", Concurrency: 2})

	var wg sync.WaitGroup
	for range 2 {
		wg.Go(func() {
			if _, err := spin.Call(context.Background(), nil); !errors.Is(err, ErrTimeout) {
				t.Errorf("spin: %v; want ErrTimeout", err)
			}
		})
	}
	deadline := time.Now().Add(400 * time.Millisecond)
	n := 0
	for ; time.Now().Before(deadline); n++ {
		want := "call " + strconv.Itoa(n)
		if got := call(t, echo, want); got != want {
			t.Fatalf("echo returned %q; want %q", got, want)
		}
	}
	wg.Wait()
	if n == 0 {
		t.Fatal("no good call completed while the bad ones spun")
	}
	t.Logf("%d good calls while two calls spun", n)
}
