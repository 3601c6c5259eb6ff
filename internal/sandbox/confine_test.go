package sandbox

import (
	"context"
	"errors"
	"log/slog"
	"slices"
	"strings"
	"testing"

	"google.golang.org/grpc/codes"

	"github.com/hivemind/taskworker/internal/childproc"
	"github.com/hivemind/taskworker/internal/childproc/childproctest"
)

// checkConfined checks both layers around a child from outside: its
// seccomp filter and, where this machine allows them, namespaces of its
// own.
func checkConfined(t *testing.T, pid int, hardening string) {
	t.Helper()
	c, err := childproc.Inspect(pid)
	if err != nil {
		t.Fatal(err)
	}
	t.Logf("child %d: %+v", pid, c)
	if c.Seccomp != 2 || childproc.Unconfined(hardening) {
		t.Errorf("seccomp mode %d, hardening %q: want the filter (2)", c.Seccomp, hardening)
	}
	if err := childproctest.NamespacesWork(); err != nil {
		t.Logf("not checked: no namespace layer on this machine: %v", err)
		return
	}
	if want := []string{"user", "mnt", "net"}; !slices.Equal(c.Namespaces, want) {
		t.Errorf("child's own namespaces %v, want %v", c.Namespaces, want)
	}
}

// TestRefusesUnconfined runs child processes where the seccomp system call
// fails, as on a kernel without it: Load fails with ErrUnconfined as
// FailedPrecondition, naming the cause and the flag; with AllowUnconfined
// the function runs and the runtime warns.
func TestRefusesUnconfined(t *testing.T) {
	wasm := guestWasm(t, goAdd)
	for _, allow := range []bool{false, true} {
		t.Run(map[bool]string{false: "refused", true: "allowed"}[allow], func(t *testing.T) {
			logs := &logBuffer{}
			cfg := isolated(t, DefaultConfig())
			cfg.ChildCommand = childproctest.WithoutSeccomp(cfg.ChildCommand)
			cfg.AllowUnconfined = allow
			cfg.Logger = slog.New(slog.NewTextHandler(logs, nil))
			r := newTestRuntime(t, cfg)
			spec := Spec{Export: "add", Concurrency: 1}
			if allow {
				m := load(t, r, wasm, spec)
				if got := call(t, m, "[1, 2]"); got != "3" {
					t.Fatalf("add(1, 2) = %q, want 3", got)
				}
				if !strings.Contains(logs.String(), "level=WARN msg=\"WebAssembly children run WITHOUT their seccomp filter") {
					t.Errorf("no warning that children run unconfined in the log:\n%s", logs.String())
				}
				return
			}
			host, _ := testHost()
			_, err := r.Load(context.Background(), wasm, spec, host)
			if !errors.Is(err, ErrUnconfined) {
				t.Fatalf("Load: %v, want ErrUnconfined", err)
			}
			st := childproc.GRPCStatus(err)
			if st.Code() != codes.FailedPrecondition {
				t.Errorf("code %v, want FailedPrecondition", st.Code())
			}
			for _, want := range []string{"seccomp(SET_MODE_FILTER): function not implemented", "--allow-unconfined"} {
				if !strings.Contains(st.Message(), want) {
					t.Errorf("message %q does not say %q", st.Message(), want)
				}
			}
		})
	}
}
