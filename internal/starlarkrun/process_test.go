//go:build linux && (amd64 || arm64)

package starlarkrun

import (
	"bytes"
	"errors"
	"log/slog"
	"slices"
	"strings"
	"sync"
	"testing"

	"google.golang.org/grpc/codes"

	"github.com/hivemind/taskworker/internal/childproc"
	"github.com/hivemind/taskworker/internal/childproc/childproctest"
)

// TestChildProcess checks a pool child from outside: its environment, its
// directory, its descriptors, its kernel-side restrictions, and both
// layers that confine it: its seccomp filter and, where this machine
// allows them, namespaces of its own.
func TestChildProcess(t *testing.T) {
	p := newPool(t, testConfig(t))
	mustCall(t, p, addScript, "add", "[1, 2]", "3")
	var proc *process
	for _, c := range p.sup.Children() {
		proc = c
	}
	problems, err := childproc.Audit(proc.ready.PID, true)
	if err != nil {
		t.Fatal(err)
	}
	for _, p := range problems {
		t.Error(p)
	}
	c, err := childproc.Inspect(proc.ready.PID)
	if err != nil {
		t.Fatal(err)
	}
	t.Logf("child %d: %s; %+v", proc.ready.PID, proc.ready.Hardening, c)
	if c.Seccomp != 2 || childproc.Unconfined(proc.ready.Hardening) {
		t.Errorf("seccomp mode %d, hardening %q: want the filter (2)", c.Seccomp, proc.ready.Hardening)
	}
	if err := childproctest.NamespacesWork(); err != nil {
		t.Skipf("no namespace layer on this machine: %v", err)
	}
	if want := []string{"user", "mnt", "net"}; !slices.Equal(c.Namespaces, want) {
		t.Errorf("child's own namespaces %v, want %v", c.Namespaces, want)
	}
}

// syncBuffer is a log destination tests read while the pool writes.
type syncBuffer struct {
	mu  sync.Mutex
	buf bytes.Buffer
}

func (b *syncBuffer) Write(p []byte) (int, error) {
	b.mu.Lock()
	defer b.mu.Unlock()
	return b.buf.Write(p)
}

func (b *syncBuffer) String() string {
	b.mu.Lock()
	defer b.mu.Unlock()
	return b.buf.String()
}

// TestRefusesUnconfined runs children where the seccomp system call fails,
// as on a kernel without it: the pool starts (and logs why it cannot run
// scripts), every call fails with ErrUnconfined as FailedPrecondition,
// naming the cause and the flag; with AllowUnconfined, calls run and the
// pool warns.
func TestRefusesUnconfined(t *testing.T) {
	for _, allow := range []bool{false, true} {
		t.Run(map[bool]string{false: "refused", true: "allowed"}[allow], func(t *testing.T) {
			var logs syncBuffer
			cfg := testConfig(t)
			cfg.Command = childproctest.WithoutSeccomp(cfg.Command)
			cfg.AllowUnconfined = allow
			cfg.Logger = slog.New(slog.NewTextHandler(&logs, nil))
			p := newPool(t, cfg)
			out, err := call(t, p, addScript, "add", "[1, 2]")
			if allow {
				if err != nil || out != "3" {
					t.Fatalf("add: %q, %v; want 3", out, err)
				}
				if !strings.Contains(logs.String(), "level=WARN msg=\"Starlark children run WITHOUT their seccomp filter") {
					t.Errorf("no warning that children run unconfined in the log:\n%s", logs.String())
				}
				return
			}
			if !errors.Is(err, ErrUnconfined) {
				t.Fatalf("add: %q, %v; want ErrUnconfined", out, err)
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
			if !strings.Contains(logs.String(), "level=ERROR msg=\"Starlark functions cannot run on this worker\"") {
				t.Errorf("no error in the log at New:\n%s", logs.String())
			}
		})
	}
}
