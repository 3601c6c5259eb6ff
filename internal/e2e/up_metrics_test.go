package e2e

import (
	"path/filepath"
	"regexp"
	"testing"
)

// `up` serves each worker's metrics and logs where: one address a worker,
// each moving when that worker runs a call.
func TestUpServesWorkerMetrics(t *testing.T) {
	dir := t.TempDir()
	p, vars := startUp(t, "--dir", dir, "--workers", "2", "--listen", freeAddr(t), "--http-listen", "")
	urls := regexp.MustCompile(`worker_00[12]=(http://\S+/metrics)`).FindAllStringSubmatch(p.Output(), -1)
	if len(urls) != 2 {
		t.Fatalf("up logged %d workers' metrics addresses, want 2:\n%s", len(urls), p.Output())
	}
	env := []string{"TASKWORKER_HOME=" + dir, "TASKWORKER_POOL=" + vars["TASKWORKER_POOL"], "TASKWORKER_TOKEN=" + vars["TASKWORKER_TOKEN"],
		"TASKWORKER_CA=" + filepath.Join(dir, "ca.crt")}
	for range 20 {
		if out, err := runCLI(t, env, "call", "add", "1", "2"); err != nil {
			t.Fatalf("%v: %s", err, out)
		}
	}
	total := 0.0
	for _, u := range urls {
		v := scrape(t, u[1], `taskworker_calls_total{code="OK",function="add"}`)
		total += max(v, 0)
	}
	if total != 20 {
		t.Fatalf("the workers' metrics count %v calls of add, want 20", total)
	}
}
