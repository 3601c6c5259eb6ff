package sandbox

import (
	"context"
	"errors"
	"testing"
	"time"

	"github.com/hivemind/taskworker/internal/childproc"
)

// TestChildProcess runs calls in child processes: a call, the process
// boundary seen from outside, a timeout that kills the process and the
// next call on a new one.
func TestChildProcess(t *testing.T) {
	r := newTestRuntime(t, isolated(t, DefaultConfig()))
	m := load(t, r, guestWasm(t, goAdd), Spec{Export: "add", Concurrency: 1})
	if got := call(t, m, "[1, 2]"); got != "3" {
		t.Fatalf("add(1, 2) = %q, want 3", got)
	}
	children := m.sup.Children()
	if len(children) != 1 {
		t.Fatalf("%d child processes, want 1", len(children))
	}
	c := children[0].(*child)
	problems, err := childproc.Audit(c.ready.PID, true)
	if err != nil {
		t.Fatal(err)
	}
	for _, p := range problems {
		t.Error(p)
	}
	t.Logf("child %d: %s, RLIMIT_AS %d MiB, compiled code from disk: %v", c.ready.PID, c.ready.Hardening, c.ready.AddressSpace>>20, c.ready.FromDisk)
	checkConfined(t, c.ready.PID, c.ready.Hardening)

	hostile := load(t, r, guestWasm(t, hostileGuest), Spec{Export: "spin", Concurrency: 1, Limits: Limits{Timeout: 200 * time.Millisecond}})
	ctx, cancel := context.WithTimeout(context.Background(), 10*time.Second)
	defer cancel()
	if _, err := hostile.Call(ctx, nil); !errors.Is(err, ErrTimeout) {
		t.Fatalf("spin: %v, want ErrTimeout", err)
	}
	if got := call(t, m, "[2, 3]"); got != "5" {
		t.Fatalf("add(2, 3) = %q, want 5", got)
	}
	if s := hostile.Stats(); s.Discarded != 1 || s.Created != 1 {
		t.Errorf("spin's stats %+v: want one process started and discarded", s)
	}
}

// TestChildReplaced checks that a killed child is replaced in the
// background: after a timeout, the module gets back to its process
// without a call asking for one.
func TestChildReplaced(t *testing.T) {
	r := newTestRuntime(t, isolated(t, DefaultConfig()))
	m := load(t, r, guestWasm(t, hostileGuest), Spec{Export: "spin", Concurrency: 1, Limits: Limits{Timeout: 200 * time.Millisecond}})
	if _, err := m.Call(context.Background(), nil); !errors.Is(err, ErrTimeout) {
		t.Fatalf("spin: %v, want ErrTimeout", err)
	}
	deadline := time.Now().Add(30 * time.Second)
	for m.Stats().Idle != 1 {
		if time.Now().After(deadline) {
			t.Fatalf("no replacement process after 30 s: %+v", m.Stats())
		}
		time.Sleep(10 * time.Millisecond)
	}
	if s := m.Stats(); s.Created != 2 || s.Discarded != 1 {
		t.Errorf("stats %+v: want 2 processes started, 1 discarded", s)
	}
}

// TestChildSurvivesTrap: a child whose instance outgrew its memory or
// trapped makes a new instance in the same process, and the next call runs
// there, contained as the first was; only a timeout costs the process.
func TestChildSurvivesTrap(t *testing.T) {
	r := newTestRuntime(t, isolated(t, DefaultConfig()))
	hostile := guestWasm(t, hostileGuest)
	trap := wasmModule{funcs: []wasmFunc{{export: "trap", results: []byte{i32}, body: []byte{0x00}}}}.bytes() // unreachable
	for _, tt := range []struct {
		wasm    []byte
		export  string
		limits  Limits
		wantErr error
	}{
		{hostile, "grow", Limits{Memory: 32 * MiB}, ErrMemoryLimit},
		{trap, "trap", Limits{}, ErrTrap},
	} {
		t.Run(tt.export, func(t *testing.T) {
			m := load(t, r, tt.wasm, Spec{Export: tt.export, Concurrency: 1, Limits: tt.limits})
			defer m.Close(context.Background())
			pid := m.sup.Children()[0].(*child).ready.PID
			for i := range 3 {
				if _, err := m.Call(context.Background(), nil); !errors.Is(err, tt.wantErr) {
					t.Fatalf("call %d: %v, want %v", i, err, tt.wantErr)
				}
				children := m.sup.Children()
				if len(children) != 1 || children[0].(*child).ready.PID != pid || !children[0].(*child).proc.Alive() {
					t.Fatalf("call %d: the process %d did not survive its instance (children %v)", i, pid, children)
				}
			}
			if s := m.Stats(); s.Discarded != 3 || s.Created != 4 {
				t.Errorf("stats %+v: want three instances thrown away and made again in one process", s)
			}
		})
	}
}
