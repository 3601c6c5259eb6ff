//go:build linux && amd64

package starlarkrun

import (
	"testing"

	"github.com/hivemind/taskworker/internal/childproc"
)

// TestChildProcess checks a pool child from outside: its environment, its
// directory, its descriptors, its kernel-side restrictions.
func TestChildProcess(t *testing.T) {
	p := newPool(t, testConfig(t))
	mustCall(t, p, addScript, "add", "[1, 2]", "3")
	var pid int
	for _, proc := range p.sup.Children() {
		pid = proc.ready.PID
	}
	problems, err := childproc.Audit(pid, true)
	if err != nil {
		t.Fatal(err)
	}
	for _, p := range problems {
		t.Error(p)
	}
}
