package pool_test

import (
	"path/filepath"
	"strings"
	"testing"
	"time"

	"github.com/hivemind/taskworker/internal/cluster"
	"github.com/hivemind/taskworker/internal/pool"
)

// A replica started with a key file of its own, not the network's, refuses
// to start instead of failing every read of the network's files.
func TestReplicaWithAnotherKeyFileRefusesToStart(t *testing.T) {
	c := cluster.New(t, cluster.Options{Workers: 1})
	ctx := ctxTimeout(t, 60*time.Second)
	cfg := c.PoolConfig(0)
	cfg.Listen = "127.0.0.1:0"
	cfg.DataDir = t.TempDir()
	cfg.KeyFile = filepath.Join(t.TempDir(), "master.keys")
	p, err := pool.New(cfg)
	if err != nil {
		t.Fatal(err)
	}
	err = p.Start(ctx)
	if err == nil {
		p.Kill()
		t.Fatal("a replica with another key file started")
	}
	if !strings.Contains(err.Error(), "does not hold") || !strings.Contains(err.Error(), "--key-file") {
		t.Fatalf("the refusal does not say what to do: %v", err)
	}
}
