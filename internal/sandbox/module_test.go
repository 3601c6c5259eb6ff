package sandbox

import (
	"context"
	"encoding/json"
	"errors"
	"strings"
	"sync"
	"testing"
	"time"

	"google.golang.org/grpc/codes"

	"github.com/hivemind/taskworker/internal/childproc"
)

// The Go guests the tests build.
const (
	goAdd        = "./examples/go-add"
	hostileGuest = "./internal/sandbox/testdata/hostile"
)

func TestGoGuest(t *testing.T) {
	r := newTestRuntime(t, DefaultConfig())
	wasm := guestWasm(t, goAdd)
	tests := []struct {
		export, input string
		want          string
		wantCode      codes.Code // of the error, when not OK
		wantErr       string
	}{
		{export: "add", input: "[1, 2]", want: "3"},
		{export: "add", input: "[-40, 2]", want: "-38"},
		{export: "add", input: "[1]", wantCode: codes.InvalidArgument, wantErr: "takes 2 arguments (int, int), got 1"},
		{export: "add", input: `[1, "two"]`, wantCode: codes.InvalidArgument, wantErr: "argument 2 (int)"},
		{export: "add", input: "1 2", wantCode: codes.InvalidArgument, wantErr: "must be a JSON array"},
		{export: "hello", input: `["World"]`, want: `"Hello, World!"`},
		{export: "hello", input: "World", wantCode: codes.InvalidArgument, wantErr: "must be a JSON array"},
		{export: "divide", input: "[1, 4]", want: "0.25"},
		{export: "divide", input: "[1, 0]", wantCode: codes.Unknown, wantErr: "division by zero"},
	}
	modules := map[string]*Module{}
	for _, tt := range tests {
		t.Run(tt.export+" "+tt.input, func(t *testing.T) {
			m := modules[tt.export]
			if m == nil {
				m = load(t, r, wasm, Spec{Export: tt.export})
				modules[tt.export] = m
			}
			out, err := m.Call(context.Background(), []byte(tt.input))
			if tt.wantErr == "" {
				if err != nil || string(out) != tt.want {
					t.Fatalf("got %q, %v; want %q", out, err, tt.want)
				}
				return
			}
			var guestErr *GuestError
			if !errors.As(err, &guestErr) || !strings.Contains(err.Error(), tt.wantErr) || childproc.GRPCCode(err) != tt.wantCode {
				t.Fatalf("got %q, %v (code %v); want a GuestError containing %q, code %v", out, err, childproc.GRPCCode(err), tt.wantErr, tt.wantCode)
			}
		})
	}
	// A function's own errors leave its instance in service.
	if s := modules["divide"].Stats(); s.Discarded != 0 || s.Created != 1 {
		t.Errorf("divide: %+v; want one instance, none discarded", s)
	}
}

func TestGuestLog(t *testing.T) {
	cfg := DefaultConfig()
	cfg.MaxLogLine = 64
	cfg.MaxLogLinesPerCall = 3
	r := newTestRuntime(t, cfg)
	host, logs := testHost()
	m, err := r.Load(context.Background(), guestWasm(t, goAdd), Spec{Export: "hello"}, host)
	if err != nil {
		t.Fatal(err)
	}
	call(t, m, `["Ada"]`)
	if !strings.Contains(logs.String(), `level=INFO msg="saying hello to Ada"`) {
		t.Errorf("log is %q; want the guest's line", logs.String())
	}

	hostile, err := r.Load(context.Background(), guestWasm(t, hostileGuest), Spec{Export: "log"}, host)
	if err != nil {
		t.Fatal(err)
	}
	if got := call(t, hostile, "[10, 200]"); got != "10" {
		t.Fatalf("log returned %q", got)
	}
	lines := strings.Count(logs.String(), "line ")
	if lines != 3 {
		t.Errorf("%d guest lines logged; want MaxLogLinesPerCall=3:\n%s", lines, logs.String())
	}
	if !strings.Contains(logs.String(), "[cut]") || strings.Contains(logs.String(), strings.Repeat("y", 65)) {
		t.Errorf("long lines not cut to MaxLogLine:\n%s", logs.String())
	}
}

func TestExtismPlugins(t *testing.T) {
	r := newTestRuntime(t, DefaultConfig())
	tests := []struct {
		file, export, input string
		check               func(t *testing.T, out []byte, err error)
	}{
		{"count_vowels.wasm", "count_vowels", "Hello, World", func(t *testing.T, out []byte, err error) {
			var got struct{ Count int }
			if err != nil || json.Unmarshal(out, &got) != nil || got.Count != 3 {
				t.Fatalf("got %s, %v; want a count of 3", out, err)
			}
		}},
		{"hello_haskell.wasm", "testing", "John", func(t *testing.T, out []byte, err error) {
			if err != nil || !strings.Contains(string(out), "John") {
				t.Fatalf("got %q, %v; want a greeting for John", out, err)
			}
		}},
		{"fail.wasm", "run_test", "", func(t *testing.T, out []byte, err error) {
			var guestErr *GuestError
			if !errors.As(err, &guestErr) || guestErr.Message != "Some error message" {
				t.Fatalf("got %q, %v; want the plugin's error", out, err)
			}
		}},
	}
	for _, tt := range tests {
		t.Run(tt.file, func(t *testing.T) {
			m := load(t, r, extismPlugin(t, tt.file), Spec{Export: tt.export})
			for range 3 { // and again on the same instance
				out, err := m.Call(context.Background(), []byte(tt.input))
				tt.check(t, out, err)
			}
		})
	}
}

func TestConcurrentCalls(t *testing.T) {
	r := newTestRuntime(t, DefaultConfig())
	m := load(t, r, guestWasm(t, goAdd), Spec{Export: "add", Concurrency: 3})
	var wg sync.WaitGroup
	errs := make(chan error, 40)
	for i := range 40 {
		wg.Go(func() {
			out, err := m.Call(context.Background(), []byte(`[`+itoa(i)+`, 1]`))
			if err == nil && string(out) != itoa(i+1) {
				err = errors.New("add(" + itoa(i) + ", 1) = " + string(out))
			}
			if err != nil {
				errs <- err
			}
		})
	}
	wg.Wait()
	close(errs)
	for err := range errs {
		t.Error(err)
	}
	if s := m.Stats(); s.Created > 3 || s.Calls != 40 {
		t.Errorf("stats %+v: want at most 3 instances for 40 calls", s)
	}
}

func TestBusy(t *testing.T) {
	r := newTestRuntime(t, DefaultConfig())
	m := load(t, r, guestWasm(t, hostileGuest), Spec{Export: "spin", Concurrency: 1, Limits: Limits{Timeout: 2 * time.Second}})
	running := callHolding(context.Background(), m, nil) // the only slot
	ctx, cancel := context.WithTimeout(context.Background(), 50*time.Millisecond)
	defer cancel()
	_, err := m.Call(ctx, nil)
	if !errors.Is(err, ErrBusy) || childproc.GRPCCode(err) != codes.ResourceExhausted {
		t.Errorf("second call: %v; want ErrBusy", err)
	}
	if err := <-running; !errors.Is(err, ErrTimeout) {
		t.Errorf("spinning call: %v; want ErrTimeout", err)
	}
}

func TestModuleClose(t *testing.T) {
	r := newTestRuntime(t, DefaultConfig())
	m := load(t, r, guestWasm(t, goAdd), Spec{Export: "add"})
	call(t, m, "[1, 1]")
	if err := m.Close(context.Background()); err != nil {
		t.Fatal(err)
	}
	if _, err := m.Call(context.Background(), []byte("[1, 1]")); !errors.Is(err, ErrClosed) {
		t.Errorf("call after Close: %v; want ErrClosed", err)
	}
	if n := r.Stats().Modules; n != 0 {
		t.Errorf("%d modules open after Close", n)
	}
}

func itoa(i int) string {
	b, _ := json.Marshal(i)
	return string(b)
}

// TestCallerContext: the caller's deadline and cancellation stop a running
// call like the function's own time limit does.
func TestCallerContext(t *testing.T) {
	r := newTestRuntime(t, DefaultConfig())
	m := load(t, r, guestWasm(t, hostileGuest), Spec{Export: "spin", Limits: Limits{Timeout: 10 * time.Second}})
	tests := []struct {
		name     string
		ctx      func() (context.Context, context.CancelFunc)
		wantErr  error
		wantCode codes.Code
		wantMsg  string
	}{
		{"canceled while running", func() (context.Context, context.CancelFunc) {
			ctx, cancel := context.WithCancel(context.Background())
			time.AfterFunc(100*time.Millisecond, cancel)
			return ctx, cancel
		}, ErrCanceled, codes.Canceled, "call canceled after"},
		{"caller's deadline first", func() (context.Context, context.CancelFunc) {
			return context.WithTimeout(context.Background(), 100*time.Millisecond)
		}, ErrTimeout, codes.DeadlineExceeded, "the caller's deadline passed"},
		{"canceled before", func() (context.Context, context.CancelFunc) {
			ctx, cancel := context.WithCancel(context.Background())
			cancel()
			return ctx, cancel
		}, ErrCanceled, codes.Canceled, "before the function started"},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			// An idle instance, so that the deadlines below do not also
			// bound making one.
			if err := m.sup.Warm(context.Background(), struct{}{}, 1); err != nil {
				t.Fatal(err)
			}
			ctx, cancel := tt.ctx()
			defer cancel()
			start := time.Now()
			_, err := m.Call(ctx, nil)
			if !errors.Is(err, tt.wantErr) || childproc.GRPCCode(err) != tt.wantCode || !strings.Contains(err.Error(), tt.wantMsg) {
				t.Fatalf("got %v (code %v); want %v, %v, mentioning %q", err, childproc.GRPCCode(err), tt.wantErr, tt.wantCode, tt.wantMsg)
			}
			if elapsed := time.Since(start); elapsed > 5*time.Second {
				t.Errorf("the call took %s to stop", elapsed)
			}
		})
	}
	if s := m.Stats(); s.Calls != 2 || s.Discarded != 2 {
		t.Errorf("stats %+v: want the two calls that ran discarded", s)
	}
}

// TestModuleCloseDrains: Close lets a call in flight finish while its ctx
// allows, and stops it when it does not.
func TestModuleCloseDrains(t *testing.T) {
	r := newTestRuntime(t, DefaultConfig())
	hostile := guestWasm(t, hostileGuest)

	work := load(t, r, hostile, Spec{Export: "work", Limits: Limits{Timeout: time.Minute}}) // however loaded the machine
	done := make(chan error)
	go func() {
		_, err := work.Call(context.Background(), []byte("[30000000]"))
		done <- err
	}()
	for work.running.Load() == 0 {
		time.Sleep(time.Millisecond)
	}
	if err := work.Close(context.Background()); err != nil {
		t.Fatal(err)
	}
	select {
	case err := <-done:
		if err != nil {
			t.Errorf("the call in flight failed: %v", err)
		}
	default:
		t.Error("Close returned before the call in flight finished")
	}

	spin := load(t, r, hostile, Spec{Export: "spin", Limits: Limits{Timeout: time.Minute}})
	go func() {
		_, err := spin.Call(context.Background(), nil)
		done <- err
	}()
	for spin.running.Load() == 0 {
		time.Sleep(time.Millisecond)
	}
	ctx, cancel := context.WithTimeout(context.Background(), 100*time.Millisecond)
	defer cancel()
	start := time.Now()
	if err := spin.Close(ctx); err != nil {
		t.Fatal(err)
	}
	err := <-done
	t.Logf("spinning call after a forced Close: %v", err)
	if !errors.Is(err, ErrClosed) || time.Since(start) > 5*time.Second {
		t.Errorf("got %v after %s; want the spinning call stopped by Close", err, time.Since(start))
	}
}
