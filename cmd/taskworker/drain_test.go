package main

import (
	"strings"
	"testing"

	"github.com/hivemind/taskworker/internal/cluster"
	"github.com/hivemind/taskworker/internal/examples"
	"github.com/hivemind/taskworker/internal/worker"
)

// `taskworker drain` says what it did, warns of a function left without a
// worker, shows the worker as draining in `workers`, and undoes; its
// mistakes get messages that say what to do.
func TestDrainCommand(t *testing.T) {
	c := cluster.New(t, cluster.Options{Workers: 2, Setup: func(w *worker.Server) error {
		if w.ID() == "worker_001" {
			if err := w.Register("only_here", examples.Hello, true); err != nil {
				return err
			}
		}
		return examples.Register(w.Register)
	}})
	t.Setenv("TASKWORKER_HOME", t.TempDir())
	t.Setenv("TASKWORKER_POOL", c.PoolAddr(0))
	t.Setenv("TASKWORKER_TOKEN", c.AdminToken)
	t.Setenv("TASKWORKER_CA", writeCA(t, c))

	code, out, stderr := run(t, "drain", "worker_001", "--grace", "5s")
	if code != 0 {
		t.Fatalf("drain: %d %s", code, stderr)
	}
	for _, want := range []string{"worker worker_001 drained", "warning: no other worker serves only_here", "tasks handed back: 0",
		"taskworker drain --undo worker_001"} {
		if !strings.Contains(out, want) {
			t.Errorf("drain's output lacks %q:\n%s", want, out)
		}
	}
	if _, out, _ := run(t, "workers"); !strings.Contains(out, "draining") || strings.Count(out, "serving") != 1 {
		t.Errorf("workers does not show worker_001 draining and worker_002 serving:\n%s", out)
	}
	if code, out, stderr := run(t, "drain", "--undo", "worker_001"); code != 0 || !strings.Contains(out, "worker_001 takes calls and tasks again") {
		t.Errorf("drain --undo: %d %q %q", code, out, stderr)
	}
	if _, out, _ := run(t, "workers"); strings.Contains(out, "draining") {
		t.Errorf("workers shows a draining worker after the undo:\n%s", out)
	}
	for _, tc := range []struct {
		args []string
		want string
	}{
		{[]string{"drain", "worker_404"}, `NotFound: no live worker "worker_404"`},
		{[]string{"drain", "worker_001", "--grace", "-1s"}, "--grace -1s is negative"},
		{[]string{"drain"}, "accepts 1 arg(s)"},
	} {
		if code, _, stderr := run(t, tc.args...); code == 0 || !strings.Contains(stderr, tc.want) {
			t.Errorf("taskworker %s: %d %q; want %q", strings.Join(tc.args, " "), code, stderr, tc.want)
		}
	}
}
