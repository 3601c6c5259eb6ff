package files

import (
	"context"
	"fmt"
	"path/filepath"
	"sync"
	"sync/atomic"
	"testing"
	"time"

	clientv3 "go.etcd.io/etcd/client/v3"
	"go.uber.org/zap"

	"github.com/hivemind/taskworker/internal/etcdserver"
	"github.com/hivemind/taskworker/internal/pki"
)

// testEtcd starts an etcd locked as the pool's is and returns a client.
func testEtcd(t *testing.T) *clientv3.Client {
	t.Helper()
	dir := t.TempDir()
	ca, err := pki.LoadOrCreateCA(filepath.Join(dir, "ca"))
	if err != nil {
		t.Fatal(err)
	}
	cfg := etcdserver.DefaultConfig(filepath.Join(dir, "etcd"))
	cfg.TickMs, cfg.ElectionMs = 10, 100
	var files pki.EtcdFiles
	if cfg.TLS, files, err = etcdserver.Locked(ca, filepath.Join(dir, "etcd-tls")); err != nil {
		t.Fatal(err)
	}
	e, err := etcdserver.Start(context.Background(), cfg)
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(e.Close)
	tlsCfg, err := pki.EtcdClientConfig(files.CA, files.ClientCert, files.ClientKey)
	if err != nil {
		t.Fatal(err)
	}
	cli, err := clientv3.New(clientv3.Config{Endpoints: e.Endpoints(), TLS: tlsCfg, Logger: zap.NewNop(), DialTimeout: 5 * time.Second})
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { cli.Close() })
	return cli
}

func create(key string) commitTxn {
	return commitTxn{cmps: []clientv3.Cmp{clientv3.Compare(clientv3.CreateRevision(key), "=", 0)},
		ops: []clientv3.Op{clientv3.OpPut(key, "v")}, marks: []string{"mark"}}
}

// A batch takes only commits that touch no key another writes, keeps each
// one's comparisons and all-or-nothing effect, and writes a shared mark once.
func TestCommitBatch(t *testing.T) {
	cli := testEtcd(t)
	ctx := context.Background()
	if _, err := cli.Put(ctx, "exists", "v"); err != nil {
		t.Fatal(err)
	}
	c := &committer{cli: cli}
	failing := commitTxn{cmps: []clientv3.Cmp{clientv3.Compare(clientv3.CreateRevision("absent"), ">", 0)},
		ops: []clientv3.Op{clientv3.OpPut("d", "v"), clientv3.OpPut("e", "v")}, marks: []string{"mark"}}
	readsB := commitTxn{cmps: []clientv3.Cmp{clientv3.Compare(clientv3.CreateRevision("b"), "=", 0)},
		ops: []clientv3.Op{clientv3.OpPut("f", "v")}}
	prefixDelete := commitTxn{ops: []clientv3.Op{clientv3.OpDelete("a", clientv3.WithPrefix())}}
	marksOnly := commitTxn{cmps: []clientv3.Cmp{clientv3.Compare(clientv3.CreateRevision("mark"), ">", 0)},
		ops: []clientv3.Op{clientv3.OpPut("g", "v")}}
	txns := []struct {
		name string
		txn  commitTxn
	}{
		{"create a", create("a")},
		{"create b", create("b")},
		{"create a again", create("a")},         // writes a key of the first
		{"failing", failing},                    // its comparison fails
		{"compares b", readsB},                  // compares a key the second writes
		{"deletes a prefix of a", prefixDelete}, // a range over a key the first writes
		{"compares the mark", marksOnly},        // compares a key the batch marks
		{"create exists", create("exists")},     // fails, writes nothing
	}
	for _, x := range txns {
		c.queue = append(c.queue, &pendingCommit{txn: x.txn, size: x.txn.size(), done: make(chan struct{})})
	}
	pending := append([]*pendingCommit(nil), c.queue...)
	name := map[*pendingCommit]string{}
	for i, p := range pending {
		name[p] = txns[i].name
	}
	names := func(b []*pendingCommit) (out []string) {
		for _, p := range b {
			out = append(out, name[p])
		}
		return out
	}
	var rounds [][]string
	for len(c.queue) > 0 {
		batch := c.take()
		rounds = append(rounds, names(batch))
		c.run(batch)
	}
	want := "[[create a create b failing create exists] [create a again compares b] [deletes a prefix of a compares the mark]]"
	if got := fmt.Sprint(rounds); got != want {
		t.Errorf("batches %s, want %s", got, want)
	}
	outcome := map[string]bool{}
	for _, p := range pending {
		<-p.done
		if p.err != nil {
			t.Fatalf("%s: %v", name[p], p.err)
		}
		outcome[name[p]] = p.ok
	}
	wantOK := map[string]bool{"create a": true, "create b": true, "create a again": false, "failing": false,
		"compares b": false, "deletes a prefix of a": true, "compares the mark": true, "create exists": false}
	for n, ok := range wantOK {
		if outcome[n] != ok {
			t.Errorf("%s: succeeded %v, want %v", n, outcome[n], ok)
		}
	}
	for key, there := range map[string]bool{"a": false, "b": true, "d": false, "e": false, "f": false, "g": true, "mark": true} {
		resp, err := cli.Get(ctx, key)
		if err != nil {
			t.Fatal(err)
		}
		if (resp.Count == 1) != there {
			t.Errorf("key %s: %d found, want there=%v", key, resp.Count, there)
		}
	}
}

// Concurrent commits all get their own outcome: of those that create the
// same key, exactly one succeeds; the others all succeed.
func TestCommitBatchConcurrent(t *testing.T) {
	cli := testEtcd(t)
	c := &committer{cli: cli}
	var (
		wg      sync.WaitGroup
		won     atomic.Int64
		created atomic.Int64
	)
	for i := range 200 {
		wg.Go(func() {
			key := fmt.Sprintf("distinct/%d", i)
			if i%4 == 0 {
				key = "contended"
			}
			ok, err := c.do(context.Background(), create(key))
			if err != nil {
				t.Error(err)
				return
			}
			switch {
			case key == "contended" && ok:
				won.Add(1)
			case ok:
				created.Add(1)
			case key != "contended":
				t.Errorf("%s not created", key)
			}
		})
	}
	wg.Wait()
	if won.Load() != 1 || created.Load() != 150 {
		t.Errorf("contended key created %d times, distinct keys %d; want 1 and 150", won.Load(), created.Load())
	}
	resp, err := cli.Get(context.Background(), "distinct/", clientv3.WithPrefix(), clientv3.WithCountOnly())
	if err != nil {
		t.Fatal(err)
	}
	if resp.Count != 150 {
		t.Errorf("%d distinct keys in etcd, want 150", resp.Count)
	}
	c.mu.Lock()
	defer c.mu.Unlock()
	t.Logf("200 commits in %d transactions", c.batches)
	if c.batched != 200 || c.inflight != 0 || len(c.queue) != 0 {
		t.Errorf("batched %d commits, %d batches in flight, %d queued; want 200, 0, 0", c.batched, c.inflight, len(c.queue))
	}
}

// The conflict rules, key by key: single keys against single keys and
// against ranges, both ways, and marks.
func TestBatchKeysConflicts(t *testing.T) {
	var k batchKeys
	k.add(commitTxn{
		cmps:  []clientv3.Cmp{clientv3.Compare(clientv3.CreateRevision("files/u/a"), "=", 0)},
		ops:   []clientv3.Op{clientv3.OpPut("manifests/a/1", "v"), clientv3.OpDelete("segments/a/", clientv3.WithPrefix())},
		marks: []string{"changed/u"},
	})
	put := func(key string) commitTxn { return commitTxn{ops: []clientv3.Op{clientv3.OpPut(key, "v")}} }
	cmp := func(key string) commitTxn {
		return commitTxn{cmps: []clientv3.Cmp{clientv3.Compare(clientv3.CreateRevision(key), "=", 0)}}
	}
	tests := []struct {
		name string
		txn  commitTxn
		want bool
	}{
		{"writes a compared key", put("files/u/a"), true},
		{"writes a written key", put("manifests/a/1"), true},
		{"writes a marked key", put("changed/u"), true},
		{"writes inside a deleted range", put("segments/a/w/00000001"), true},
		{"writes just past a deleted range", put("segments/a0"), false},
		{"writes a key that sorts right after a written one", put("manifests/a/1\x00"), false},
		{"compares a written key", cmp("manifests/a/1"), true},
		{"compares inside a deleted range", cmp("segments/a/x"), true},
		{"compares a marked key", cmp("changed/u"), true},
		{"compares a compared key", cmp("files/u/a"), false},
		{"marks a compared key", commitTxn{marks: []string{"files/u/a"}}, true},
		{"marks a written key", commitTxn{marks: []string{"manifests/a/1"}}, true},
		{"shares the mark", commitTxn{marks: []string{"changed/u"}}, false},
		{"deletes a range over a written key", commitTxn{ops: []clientv3.Op{clientv3.OpDelete("manifests/", clientv3.WithPrefix())}}, true},
		{"deletes a range over a compared key", commitTxn{ops: []clientv3.Op{clientv3.OpDelete("files/", clientv3.WithPrefix())}}, true},
		{"compares a range over a marked key", commitTxn{cmps: []clientv3.Cmp{clientv3.Compare(clientv3.CreateRevision("changed/"), "=", 0).WithPrefix()}}, true},
		{"touches other keys", commitTxn{cmps: []clientv3.Cmp{clientv3.Compare(clientv3.CreateRevision("files/u/b"), "=", 0)},
			ops: []clientv3.Op{clientv3.OpPut("manifests/b/1", "v"), clientv3.OpDelete("segments/b/", clientv3.WithPrefix())}, marks: []string{"changed/u"}}, false},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			if got := k.conflicts(tt.txn); got != tt.want {
				t.Errorf("conflicts %v, want %v", got, tt.want)
			}
		})
	}
}
