package pool_test

import (
	"bytes"
	"fmt"
	"testing"
	"time"

	"github.com/hivemind/taskworker"
	v1 "github.com/hivemind/taskworker/api/taskworker/v1"
	"github.com/hivemind/taskworker/internal/pool"
)

// TestEtcdSpaceComesBack deploys three 11 MiB modules and undeploys them:
// the pool's compaction frees the space they held in etcd's database, and
// its defragmentation gives it back to the file system.
func TestEtcdSpaceComesBack(t *testing.T) {
	ctx := ctxTimeout(t, 3*time.Minute)
	cfg := pool.DefaultConfig(t.TempDir())
	cfg.Listen = "127.0.0.1:0"
	cfg.EtcdTickMs, cfg.EtcdElectionMs = 10, 100
	cfg.Insecure = true
	cfg.EtcdCompactEvery, cfg.EtcdCompactRetain = 200*time.Millisecond, time.Nanosecond
	cfg.EtcdDefragEvery, cfg.EtcdDefragMinFree = 500*time.Millisecond, 8<<20
	p, err := pool.New(cfg)
	if err != nil {
		t.Fatal(err)
	}
	if err := p.Start(ctx); err != nil {
		t.Fatal(err)
	}
	defer p.Kill()
	cl, err := taskworker.Dial(p.Addr(), taskworker.WithToken(p.AdminToken()), taskworker.WithInsecure())
	if err != nil {
		t.Fatal(err)
	}
	defer cl.Close()
	etcd := p.EtcdClientForTest()
	size := func() (total, inUse int64) {
		t.Helper()
		st, err := etcd.Status(ctx, p.EtcdEndpoints()[0])
		if err != nil {
			t.Fatal(err)
		}
		return st.DbSize, st.DbSizeInUse
	}
	_, inUseBefore := size()
	star := taskworker.DeploySpec{Runtime: v1.Runtime_RUNTIME_STARLARK, Export: "f"}
	for i := range 3 {
		script := fmt.Appendf(nil, "def f():\n    return %d\n", i)
		script = append(script, bytes.Repeat([]byte("# eleven MiB of comment, to take room in etcd\n"), (11<<20)/47)...)
		if _, err := cl.Deploy(ctx, fmt.Sprintf("big%d", i), script, star); err != nil {
			t.Fatal(err)
		}
	}
	total, inUse := size()
	t.Logf("before: %d KiB in use; after three deploys: %d KiB in use of %d KiB", inUseBefore>>10, inUse>>10, total>>10)
	if inUse < inUseBefore+24<<20 {
		t.Fatalf("three 11 MiB deploys take only %d MiB in etcd: the test measures nothing", (inUse-inUseBefore)>>20)
	}
	for i := range 3 {
		if err := cl.Undeploy(ctx, fmt.Sprintf("big%d", i)); err != nil {
			t.Fatal(err)
		}
	}
	deadline := time.Now().Add(time.Minute)
	for {
		total, inUse = size()
		if inUse < inUseBefore+4<<20 && total < inUseBefore+12<<20 {
			t.Logf("after undeploys: %d KiB in use of %d KiB", inUse>>10, total>>10)
			return
		}
		if time.Now().After(deadline) {
			t.Fatalf("a minute after the undeploys, etcd's database is %d MiB, %d MiB in use; want the space back (about %d MiB in use before)", total>>20, inUse>>20, inUseBefore>>20)
		}
		time.Sleep(100 * time.Millisecond)
	}
}
