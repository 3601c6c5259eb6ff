package e2e

import (
	"regexp"
	"strings"
	"testing"
)

// `bench call` against a running `up` measures the pool and the direct
// baseline, and reads the CPU each process spent per call from /proc: the
// client, the pool (found by the address it listens on), the workers below
// it, and the standalone worker of the baseline.
func TestBenchCallReportsCPUPerCall(t *testing.T) {
	dir := t.TempDir()
	_, vars := startUp(t, "--dir", dir, "--workers", "1", "--listen", freeAddr(t))
	env := []string{"TASKWORKER_HOME=" + dir, "TASKWORKER_POOL=" + vars["TASKWORKER_POOL"], "TASKWORKER_CA=" + vars["TASKWORKER_CA"],
		"TASKWORKER_TOKEN=" + vars["TASKWORKER_TOKEN"]}
	out, err := runCLI(t, env, "bench", "call", "--concurrency", "2", "--duration", "300ms", "--warmup", "0s")
	if err != nil {
		t.Fatalf("bench call: %v\n%s", err, out)
	}
	us := `[0-9]+\.[0-9] µs`
	for _, want := range []string{
		`(?m)^pool +2 +[0-9]+ .* 0$`,
		`(?m)^direct +2 +[0-9]+ .* 0$`,
		`pool/direct at concurrency 2: calls/s [0-9.]+x, p50 [0-9.]+x`,
		`CPU per call \(pool\): client ` + us + `, pool ` + us + `, processes below it ` + us,
		`CPU per call \(direct\): client ` + us + `, worker ` + us,
	} {
		if !regexp.MustCompile(want).MatchString(out) {
			t.Errorf("no %q in the output:\n%s", want, out)
		}
	}

	// With --versus both sides go through the pool, named by their
	// functions, and no baseline worker is started.
	out, err = runCLI(t, env, "bench", "call", "--function", "echo", "--args", "[3]", "--versus", "sleep",
		"--concurrency", "2", "--duration", "300ms", "--warmup", "0s", "--turns", "2")
	if err != nil {
		t.Fatalf("bench call --versus: %v\n%s", err, out)
	}
	for _, want := range []string{
		`(?m)^echo +2 +[0-9]+ .* 0$`,
		`(?m)^sleep +2 +[0-9]+ .* 0$`,
		`echo/sleep at concurrency 2: calls/s [0-9.]+x, p50 [0-9.]+x`,
		`CPU per call \(sleep\): client ` + us + `, pool ` + us + `, processes below it ` + us,
	} {
		if !regexp.MustCompile(want).MatchString(out) {
			t.Errorf("no %q in the output:\n%s", want, out)
		}
	}
	if strings.Contains(out, "direct") {
		t.Errorf("a direct baseline ran with --versus:\n%s", out)
	}
}
