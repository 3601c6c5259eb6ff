package e2e

import (
	"context"
	"strings"
	"testing"
	"time"

	"github.com/hivemind/taskworker"
)

// The pool's taskworker_quota_users_near_limit counts a user whose files
// reach 90% of their storage quota, and stops counting them when the quota
// is raised.
func TestQuotaNearLimitMetric(t *testing.T) {
	n := &network{t: t, dir: t.TempDir(), poolAddr: freeAddr(t), poolArgs: []string{"--metrics-listen", "127.0.0.1:0"}}
	n.startPool()
	n.workers = append(n.workers, n.startWorker("worker_001"))
	n.waitWorkers(1, 20*time.Second)
	url := metricsURL(t, n.pool)
	const series = `taskworker_quota_users_near_limit{resource="storage_bytes"}`
	// The pool reads the gauges every 10 s.
	waitSeries := func(want float64) {
		t.Helper()
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
	waitSeries(0)

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
	waitSeries(1)

	if out, err := n.cli("quota", "set", "bob", "--storage", "10MiB"); err != nil {
		t.Fatalf("%v: %s", err, out)
	}
	waitSeries(0)
}
