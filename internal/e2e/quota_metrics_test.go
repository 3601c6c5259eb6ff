package e2e

import (
	"context"
	"os"
	"path/filepath"
	"strings"
	"testing"
	"time"

	"github.com/hivemind/taskworker"
)

// The pool's taskworker_quota_users_near_limit counts a user whose files
// reach 90% of their storage quota, and stops counting them when the quota
// is raised; and so for their deployed modules and their tasks not ended.
func TestQuotaNearLimitMetric(t *testing.T) {
	n := &network{t: t, dir: t.TempDir(), poolAddr: freeAddr(t), poolArgs: []string{"--metrics-listen", "127.0.0.1:0"}}
	n.startPool()
	n.workers = append(n.workers, n.startWorker("worker_001"))
	n.waitWorkers(1, 20*time.Second)
	url := metricsURL(t, n.pool)
	// The pool reads the gauges every 10 s.
	waitSeries := func(resource string, want float64) {
		t.Helper()
		series := `taskworker_quota_users_near_limit{resource="` + resource + `"}`
		deadline := time.Now().Add(45 * time.Second)
		for {
			v := scrape(t, url, series)
			if v == want {
				return
			}
			if time.Now().After(deadline) {
				t.Fatalf("%s = %v, want %v", series, v, want)
			}
			time.Sleep(500 * time.Millisecond)
		}
	}

	out, err := n.cli("token", "create", "--user", "bob")
	if err != nil {
		t.Fatalf("%v: %s", err, out)
	}
	bob := strings.TrimSpace(out)
	if out, err := n.cli("quota", "set", "bob", "--storage", "1MiB"); err != nil {
		t.Fatalf("%v: %s", err, out)
	}
	waitSeries("storage_bytes", 0)

	c, err := taskworker.Dial(n.poolAddr, taskworker.WithToken(bob), taskworker.WithCAFile(n.ca()))
	if err != nil {
		t.Fatal(err)
	}
	defer c.Close()
	ctx, cancel := context.WithTimeout(context.Background(), time.Minute)
	defer cancel()
	if _, err := c.Push(ctx, "big.bin", randomBytes(950<<10)); err != nil {
		t.Fatal(err)
	}
	waitSeries("storage_bytes", 1)

	if out, err := n.cli("quota", "set", "bob", "--storage", "10MiB"); err != nil {
		t.Fatalf("%v: %s", err, out)
	}
	waitSeries("storage_bytes", 0)

	// One module of a quota of one; two tasks, still queued or running, of
	// a quota of two.
	if out, err := n.cli("quota", "set", "bob", "--module-count", "1", "--tasks", "2"); err != nil {
		t.Fatalf("%v: %s", err, out)
	}
	waitSeries("modules", 0)
	script := filepath.Join(t.TempDir(), "nap.star")
	if err := os.WriteFile(script, []byte("def nap():\n    return 1\n"), 0o644); err != nil {
		t.Fatal(err)
	}
	if out, err := n.cliAs(bob, "", "deploy", "nap", script); err != nil {
		t.Fatalf("deploy: %v: %s", err, out)
	}
	waitSeries("modules", 1)
	for range 2 {
		if out, err := n.cliAs(bob, "", "submit", "sleep", "60000"); err != nil {
			t.Fatalf("submit: %v: %s", err, out)
		}
	}
	waitSeries("tasks", 1)
}
