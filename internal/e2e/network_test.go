package e2e

import (
	"bytes"
	"context"
	"path/filepath"
	"strings"
	"testing"
	"time"

	"github.com/hivemind/taskworker/internal/cluster"
)

// The README's mistake, with the built binary: a second network's worker
// started on the first network's worker data directory. The worker exits
// with an error naming both networks, the directory is untouched, and the
// first network's files still read from it.
func TestSecondNetworkCannotTakeAWorkersDataDirectory(t *testing.T) {
	first := startNetwork(t, 1)
	c := first.client()
	ctx, cancel := context.WithTimeout(context.Background(), 2*time.Minute)
	defer cancel()
	data := randomBytes(300 << 10)
	info, err := c.Push(ctx, "kept", data)
	if err != nil {
		t.Fatal(err)
	}
	dir := filepath.Join(first.dir, "workers", "worker_001")
	first.workers[0].Kill()
	before := cluster.Snapshot(t, dir)

	second := startNetwork(t, 0)
	intruder := start(t, "second network's worker_001", nil, "worker", "--id", "worker_001", "--pool", second.poolAddr,
		"--listen", "127.0.0.1:0", "--join-token-file", filepath.Join(second.dir, "join.token"), "--ca", second.ca(), "--data-dir", dir)
	select {
	case <-intruder.Done():
	case <-time.After(time.Minute):
		t.Fatalf("the worker kept running on another network's data directory:\n%s", intruder.Output())
	}
	if code := intruder.ExitCode(); code == 0 || !strings.Contains(intruder.Output(), "belongs to network") {
		t.Fatalf("exit code %d, output:\n%s\nwant a failure saying the directory belongs to another network", code, intruder.Output())
	}
	after := cluster.Snapshot(t, dir)
	if len(after) != len(before) {
		t.Fatalf("the directory had %d files, now %d", len(before), len(after))
	}
	for p, b := range before {
		if !bytes.Equal(after[p], b) {
			t.Fatalf("%s changed", p)
		}
	}

	// Back on its own network (once the pool has its new address), the
	// worker serves the file from the directory.
	first.workers[0] = first.startWorker("worker_001")
	deadline := time.Now().Add(time.Minute)
	for {
		got, err := c.Get(ctx, info.FileId)
		if err == nil && bytes.Equal(got, data) {
			break
		}
		if time.Now().After(deadline) {
			t.Fatalf("the first network's file: %d bytes, %v", len(got), err)
		}
		time.Sleep(200 * time.Millisecond)
	}
	out, err := first.cli("status")
	// One worker: the file is a single copy, and says so.
	if err != nil || !strings.Contains(out, "1 files, 1 versions: 0 at full redundancy, 1 single copy, 0 reduced, 0 lost") {
		t.Fatalf("status: %s, %v", out, err)
	}
	t.Logf("status:\n%s", out)
}
