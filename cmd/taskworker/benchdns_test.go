package main

import (
	"strings"
	"testing"

	"github.com/hivemind/taskworker/internal/cluster"
)

// bench dns against an in-process network: the baseline and the zone name
// are measured without errors; an outside name that does not resolve is
// left out, saying why; a zone name no worker serves stops the run.
func TestBenchDNS(t *testing.T) {
	c := cluster.New(t, cluster.Options{Workers: 1})
	t.Setenv("TASKWORKER_HOME", t.TempDir())
	t.Setenv("TASKWORKER_POOL", c.PoolAddr(0))
	t.Setenv("TASKWORKER_TOKEN", c.AdminToken)
	t.Setenv("TASKWORKER_CA", writeCA(t, c))
	short := []string{"bench", "dns", "--duration", "200ms", "--warmup", "0s", "--concurrency", "1,4"}

	code, stdout, stderr := run(t, append(short, "--external", "no-such-name.invalid")...)
	if code != 0 {
		t.Fatalf("exit %d: %s", code, stderr)
	}
	for _, want := range []string{"external name no-such-name.invalid left out", "zone/whoami at concurrency 1:", "zone/whoami at concurrency 4:"} {
		if !strings.Contains(stdout, want) {
			t.Errorf("the output lacks %q:\n%s", want, stdout)
		}
	}
	for _, line := range strings.Split(stdout, "\n") {
		f := strings.Fields(line)
		if len(f) == 7 && (f[0] == "whoami" || f[0] == "zone") && f[6] != "0" {
			t.Errorf("errors in a run: %s", line)
		}
	}

	code, _, stderr = run(t, append(short, "--name", "nobody-serves-this.fn.taskworker.internal")...)
	if code != 1 || !strings.Contains(stderr, "is a worker serving it?") {
		t.Errorf("exit %d, stderr %q; want a failure asking whether a worker serves the name", code, stderr)
	}
}
