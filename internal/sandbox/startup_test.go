package sandbox

import (
	"context"
	"encoding/json"
	"errors"
	"strings"
	"testing"
	"time"

	"google.golang.org/grpc/codes"

	"github.com/hivemind/taskworker/internal/childproc"
)

// A guest's start-up (a Go guest's runtime and package initialization)
// runs when its instance is made, before and outside any call: its log
// line is the function's, written at Load, and the secret read and the
// fetch it tries are refused as no call's, with a message that says why.
func TestStartUpRunsBeforeAnyCall(t *testing.T) {
	isolations(t, DefaultConfig(), testStartUpRunsBeforeAnyCall)
}

func testStartUpRunsBeforeAnyCall(t *testing.T, cfg Config) {
	r := newTestRuntime(t, cfg)
	host, logs := testHost()
	m, err := r.Load(context.Background(), guestWasm(t, "./internal/sandbox/testdata/hostcalls"), Spec{Export: "at_start"}, host)
	if err != nil {
		t.Fatal(err)
	}
	defer m.Close(context.Background())
	if !strings.Contains(logs.String(), "hostcalls guest: starting up") {
		t.Errorf("no start-up log line after Load; the log holds %q", logs.String())
	}
	var got [2]string
	if err := json.Unmarshal([]byte(call(t, m, "")), &got); err != nil {
		t.Fatal(err)
	}
	for i, what := range []string{"secret read", "fetch"} {
		if !strings.HasPrefix(got[i], "failed_precondition: ") || !strings.Contains(got[i], "start-up") {
			t.Errorf("the start-up's %s got %q; want it refused as a start-up's", what, got[i])
		}
	}
}

// A start-up that traps, exits, loops or outgrows its memory fails the
// Load (the deploy) with the error a call would have had, within the
// function's time limit, and leaves nothing running.
func TestHostileStartUp(t *testing.T) { isolations(t, DefaultConfig(), testHostileStartUp) }

func testHostileStartUp(t *testing.T, cfg Config) {
	r := newTestRuntime(t, cfg)
	withStartUp := func(body []byte, imports ...wasmImport) []byte {
		return wasmModule{imports: imports, memoryPages: 1, funcs: []wasmFunc{
			{export: "_initialize", body: body},
			{export: "run", results: []byte{i32}, body: bodyReturnZero},
		}}.bytes()
	}
	procExit := wasmImport{module: "wasi_snapshot_preview1", name: "proc_exit", params: []byte{i32}}
	for _, tt := range []struct {
		name     string
		wasm     []byte
		spec     Spec
		wantErr  error
		wantCode codes.Code
		wantMsg  string
	}{
		{"traps", withStartUp([]byte{0x00}), Spec{Export: "run"}, ErrTrap, codes.Aborted, "unreachable"},
		{"exits", withStartUp([]byte{0x41, 0x03, 0x10, 0x00}, procExit), Spec{Export: "run"}, ErrTrap, codes.Aborted, "exited with code 3"},
		{"loops", withStartUp(bodySpin[:5]), Spec{Export: "run", Limits: Limits{Timeout: 200 * time.Millisecond}},
			ErrTimeout, codes.DeadlineExceeded, "time limit of 200ms"},
		// At Load, too little memory is the spec's fault, as for any module.
		{"outgrows its memory", withStartUp(bodyGrowForever), Spec{Export: "run", Limits: Limits{Memory: 4 * MiB}},
			ErrInvalidSpec, codes.InvalidArgument, "more than its 4 MiB"},
	} {
		t.Run(tt.name, func(t *testing.T) {
			host, _ := testHost()
			start := time.Now()
			m, err := r.Load(context.Background(), tt.wasm, tt.spec, host)
			elapsed := time.Since(start)
			if err == nil {
				m.Close(context.Background())
				t.Fatal("Load succeeded")
			}
			t.Logf("%v after %s", err, elapsed.Round(time.Millisecond))
			if !errors.Is(err, tt.wantErr) || !strings.Contains(err.Error(), "start-up") || !strings.Contains(err.Error(), tt.wantMsg) {
				t.Errorf("error %q; want %v, naming the start-up and %q", err, tt.wantErr, tt.wantMsg)
			}
			if code := childproc.GRPCCode(err); code != tt.wantCode {
				t.Errorf("code %v; want %v", code, tt.wantCode)
			}
			if tt.spec.Timeout > 0 && elapsed > tt.spec.Timeout+3*time.Second {
				t.Errorf("Load took %s; the start-up's limit was %s", elapsed, tt.spec.Timeout)
			}
		})
	}
	// The runtime still loads and serves a good module.
	m := load(t, r, withStartUp(nil), Spec{Export: "run"})
	defer m.Close(context.Background())
	if out := call(t, m, ""); out != "" {
		t.Errorf("a good module's call returned %q", out)
	}
}
