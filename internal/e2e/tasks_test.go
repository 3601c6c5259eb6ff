package e2e

import (
	"os"
	"path/filepath"
	"strings"
	"testing"
)

// Tasks, schedules, quotas and key rotation from the command line, against
// `taskworker up`.
func TestTasksQuotasAndKeysFromTheCommandLine(t *testing.T) {
	dir := t.TempDir()
	t.Setenv("TASKWORKER_HOME", dir)
	for _, v := range []string{"TASKWORKER_POOL", "TASKWORKER_TOKEN", "TASKWORKER_CA", "TASKWORKER_JOIN_TOKEN_FILE"} {
		t.Setenv(v, "")
	}
	startUp(t, "--dir", dir, "--workers", "2", "--listen", freeAddr(t))
	run := func(args ...string) string {
		t.Helper()
		out, err := runCLI(t, nil, args...)
		if err != nil {
			t.Fatalf("taskworker %s: %v\n%s", strings.Join(args, " "), err, out)
		}
		return out
	}

	if got := run("submit", "--wait", "add", "40", "2"); !strings.HasSuffix(got, "42") {
		t.Fatalf("submit --wait add 40 2: %q", got)
	}
	id := run("submit", "--key", "once", "add", "1", "2")
	again, err := runCLI(t, nil, "submit", "--key", "once", "add", "1", "2")
	if err != nil || !strings.Contains(again, id) {
		t.Fatalf("a second submit with the key: %q, %v; want %s", again, err, id)
	}
	if got := run("task", "wait", id); got != "3" {
		t.Fatalf("task wait: %q", got)
	}
	if got := run("task", id); !strings.Contains(got, "succeeded") || !strings.Contains(got, "worker_00") {
		t.Fatalf("task %s:\n%s", id, got)
	}
	if got := run("tasks", "--state", "succeeded", "--function", "add"); strings.Count(got, "\n") < 2 {
		t.Fatalf("tasks:\n%s", got)
	}
	if out, err := runCLI(t, nil, "task", "nosuch"); err == nil || !strings.Contains(out, "not a task id") {
		t.Fatalf("task nosuch: %q, %v", out, err)
	}

	run("quota", "set", "bob", "--storage", "10GiB", "--calls", "64")
	if got := run("quota", "get", "bob"); !strings.Contains(got, "10 GiB") || !strings.Contains(got, "64") {
		t.Fatalf("quota get bob:\n%s", got)
	}

	file := filepath.Join(t.TempDir(), "kept.txt")
	if err := os.WriteFile(file, []byte("kept across a key rotation"), 0o600); err != nil {
		t.Fatal(err)
	}
	fileID := strings.Fields(run("push", file))[0]
	if got := run("keys", "rotate"); !strings.Contains(got, "files") {
		t.Fatalf("keys rotate:\n%s", got)
	}
	if got := run("get", fileID); got != "kept across a key rotation" {
		t.Fatalf("get after the rotation: %q", got)
	}
}
