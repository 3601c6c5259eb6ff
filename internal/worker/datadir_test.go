package worker_test

import (
	"bytes"
	"context"
	"os"
	"path/filepath"
	"strings"
	"testing"
	"time"

	"github.com/hivemind/taskworker/internal/cluster"
	"github.com/hivemind/taskworker/internal/worker"
)

// A data directory belongs to the network its worker first joined: a
// worker of a second network pointed at it is refused with an error that
// says so, the directory is left as it was, and the first network still
// reads its file from it.
func TestDataDirectoryBelongsToOneNetwork(t *testing.T) {
	first := cluster.New(t, cluster.Options{Workers: 1})
	ctx, cancel := context.WithTimeout(context.Background(), time.Minute)
	defer cancel()
	data := bytes.Repeat([]byte("the first network's file "), 20_000)
	info, err := first.Client(0).Push(ctx, "f", data)
	if err != nil {
		t.Fatal(err)
	}
	dir := filepath.Join(first.Dir(), "workers", "worker_001")
	recorded, err := os.ReadFile(filepath.Join(dir, "network"))
	if err != nil || strings.TrimSpace(string(recorded)) != first.Pools[0].ClusterID() {
		t.Fatalf("the data directory records network %q (%v), the pool is %q", recorded, err, first.Pools[0].ClusterID())
	}
	first.StopWorker(0)
	before := cluster.Snapshot(t, dir)

	second := cluster.New(t, cluster.Options{Workers: 1})
	w, err := worker.New(worker.Config{ID: "worker_001", PoolAddr: second.PoolAddr(0), JoinToken: second.JoinToken, CA: second.CA.CertPEM(), DataDir: dir})
	if err != nil {
		t.Fatal(err)
	}
	if err := w.Start(ctx, "127.0.0.1:0"); err != nil {
		t.Fatal(err)
	}
	err = w.WaitRegistered(ctx)
	w.Kill()
	if err == nil || !strings.Contains(err.Error(), "belongs to network "+first.Pools[0].ClusterID()) || w.Err() == nil {
		t.Fatalf("a second network's worker on the first's data directory: %v; want a refusal naming the network", err)
	}
	t.Logf("refused: %v", err)
	select {
	case <-w.Refused():
	default:
		t.Fatal("Refused is not closed after a refusal")
	}
	if ids := second.Pools[0].WorkerIDs(); len(ids) != 1 {
		t.Fatalf("the second pool lists %v", ids)
	}
	after := cluster.Snapshot(t, dir)
	if len(after) != len(before) {
		t.Fatalf("the refused worker changed the directory: %d files before, %d after", len(before), len(after))
	}
	for p, b := range before {
		if !bytes.Equal(after[p], b) {
			t.Fatalf("the refused worker changed %s", p)
		}
	}

	first.RestartWorker(0)
	if err := first.Workers[0].WaitRegistered(ctx); err != nil {
		t.Fatal(err)
	}
	if got, err := first.Client(0).Get(ctx, info.FileId); err != nil || !bytes.Equal(got, data) {
		t.Fatalf("the first network's file: %d bytes, %v", len(got), err)
	}
}

// A network file that is not a cluster id stops the worker before it
// touches anything.
func TestUnreadableNetworkFileStopsTheWorker(t *testing.T) {
	dir := t.TempDir()
	if err := os.WriteFile(filepath.Join(dir, "network"), []byte("not/an id\n"), 0o600); err != nil {
		t.Fatal(err)
	}
	w, err := worker.New(worker.Config{ID: "w", DataDir: dir})
	if err != nil {
		t.Fatal(err)
	}
	err = w.Start(context.Background(), "127.0.0.1:0")
	if err == nil {
		w.Kill()
		t.Fatal("started with an unreadable network file")
	}
	if !strings.Contains(err.Error(), "not a network's cluster id") {
		t.Fatalf("error: %v", err)
	}
	if _, err := os.Stat(filepath.Join(dir, "shards")); err == nil {
		t.Fatal("the shard store was opened")
	}
}

// A network's identity is made once, in etcd: pools sharing the etcd agree
// on it, and a restarted pool keeps it, so the directories of its workers
// stay theirs.
func TestClusterIDIsStable(t *testing.T) {
	c := cluster.New(t, cluster.Options{Pools: 2, Workers: 1})
	id := c.Pools[0].ClusterID()
	if id == "" || c.Pools[1].ClusterID() != id {
		t.Fatalf("pools sharing an etcd: cluster ids %q and %q", id, c.Pools[1].ClusterID())
	}
	c.KillPool(0)
	c.StartPool(0)
	if got := c.Pools[0].ClusterID(); got != id {
		t.Fatalf("after a restart the pool's cluster id is %q, was %q", got, id)
	}
	other := cluster.New(t, cluster.Options{Workers: 1})
	if other.Pools[0].ClusterID() == id {
		t.Fatal("two networks have one cluster id")
	}
}
