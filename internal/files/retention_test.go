package files_test

import (
	"bytes"
	"context"
	"encoding/json"
	"io"
	"io/fs"
	"path/filepath"
	"strings"
	"sync"
	"sync/atomic"
	"testing"
	"time"

	clientv3 "go.etcd.io/etcd/client/v3"
	"google.golang.org/grpc/codes"
	"google.golang.org/grpc/status"

	"github.com/hivemind/taskworker"
	v1 "github.com/hivemind/taskworker/api/taskworker/v1"
	"github.com/hivemind/taskworker/internal/cluster"
	"github.com/hivemind/taskworker/internal/pool"
	"github.com/hivemind/taskworker/internal/quota"
)

// quotaCluster starts a cluster whose users' quotas are limits[user]
// (the defaults for others).
func quotaCluster(t *testing.T, opts cluster.Options, limits map[string]quota.Limits) *cluster.Cluster {
	var mu sync.Mutex
	return quotaClusterFunc(t, opts, func(user string) quota.Limits {
		mu.Lock()
		defer mu.Unlock()
		return limits[user]
	})
}

func quotaClusterFunc(t *testing.T, opts cluster.Options, limits func(user string) quota.Limits) *cluster.Cluster {
	opts.PoolConfig = func(_ int, cfg *pool.Config) {
		cfg.Files.Limits = func(_ context.Context, user string) (quota.Limits, error) {
			return limits(user), nil
		}
	}
	return cluster.New(t, opts)
}

// userClient returns a client of pool p acting as user.
func userClient(t *testing.T, c *cluster.Cluster, p int, user string) *taskworker.Client {
	t.Helper()
	token, err := c.Client(0).CreateToken(ctxTimeout(t, 30*time.Second), user, "test")
	if err != nil {
		t.Fatal(err)
	}
	return c.ClientWithToken(p, token)
}

// writeIDs returns the write of each version of a file, from etcd.
func writeIDs(t *testing.T, etcd *clientv3.Client, fileID string) map[int64]string {
	t.Helper()
	resp, err := etcd.Get(context.Background(), "", clientv3.WithFromKey())
	if err != nil {
		t.Fatal(err)
	}
	out := map[int64]string{}
	for _, kv := range resp.Kvs {
		if strings.Contains(string(kv.Key), "manifests/"+fileID+"/") {
			var m struct {
				Version int64  `json:"version"`
				WriteID string `json:"write_id"`
			}
			if err := json.Unmarshal(kv.Value, &m); err != nil {
				t.Fatal(err)
			}
			out[m.Version] = m.WriteID
		}
	}
	return out
}

// writesOnDisk returns the writes the workers' data directories hold
// shards of (a directory per write).
func writesOnDisk(t *testing.T, c *cluster.Cluster) map[string]int {
	t.Helper()
	out := map[string]int{}
	_ = filepath.WalkDir(filepath.Join(c.Dir(), "workers"), func(p string, d fs.DirEntry, err error) error {
		if err == nil && d.Type().IsRegular() && strings.Contains(p, "/shards/") {
			out[filepath.Base(filepath.Dir(p))]++
		}
		return nil
	})
	return out
}

// A file keeps the last N versions (its own keep_versions, else its
// owner's, else 10) and, with KeepFor, those younger than it; the older
// versions' manifests go at the commit that passes them, their shards
// from the workers' disks, and their bytes from the owner's storage use.
func TestRetentionKeepsTheLastVersions(t *testing.T) {
	c := quotaCluster(t, cluster.Options{Workers: 3}, map[string]quota.Limits{
		"alice": {KeepVersions: 2},
		"carol": {KeepVersions: 2, KeepFor: time.Hour},
	})
	etcd := c.EtcdClient()
	tests := []struct {
		name     string
		user     string
		perFile  int64
		versions int64
		keep     int64
	}{
		{"the file's own", "dave", 3, 6, 3},
		{"the file's own over its owner's", "alice", 4, 6, 4},
		{"the owner's", "alice", 0, 5, 2},
		{"the default", "dave", 0, quota.DefaultKeepVersions + 3, quota.DefaultKeepVersions},
		{"younger than KeepFor", "carol", 0, 5, 5},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			ctx := ctxTimeout(t, 2*time.Minute)
			cl := userClient(t, c, 0, tt.user)
			data := func(v int64) []byte { return bytes.Repeat([]byte{byte(v)}, 2*block+int(v)) }
			before, err := c.Pools[0].Files().StorageUsed(ctx, tt.user) // of the user's other files
			if err != nil {
				t.Fatal(err)
			}
			resp, err := v1.NewFileServiceClient(cl.Conn()).Push(ctx, &v1.PushRequest{Filename: "f", FileData: data(1), KeepVersions: tt.perFile})
			if err != nil {
				t.Fatal(err)
			}
			id := resp.FileId
			writes := map[int64]string{}
			for v := int64(2); v <= tt.versions; v++ {
				for v, w := range writeIDs(t, etcd, id) {
					writes[v] = w
				}
				if _, err := cl.Revise(ctx, id, data(v), v-1); err != nil {
					t.Fatalf("version %d: %v", v, err)
				}
			}
			for v, w := range writeIDs(t, etcd, id) {
				writes[v] = w
			}
			hist, err := cl.History(ctx, id)
			if err != nil {
				t.Fatal(err)
			}
			if int64(len(hist)) != tt.keep || hist[0].Version != tt.versions || hist[len(hist)-1].Version != tt.versions-tt.keep+1 {
				t.Fatalf("%d versions remain, from %d to %d; want the last %d of %d", len(hist), hist[len(hist)-1].Version, hist[0].Version, tt.keep, tt.versions)
			}
			wantUse := before
			for _, h := range hist {
				got, err := cl.Download(ctx, id, h.Version, io.Discard)
				if err != nil || got.Size != int64(len(data(h.Version))) {
					t.Fatalf("version %d: %v, %v", h.Version, got, err)
				}
				wantUse += h.Size
			}
			if use, err := c.Pools[0].Files().StorageUsed(ctx, tt.user); err != nil || use != wantUse {
				t.Fatalf("storage use of %s: %d, %v; want %d (the kept versions)", tt.user, use, err, wantUse)
			}
			first := tt.versions - tt.keep + 1
			waitFor(t, time.Minute, "the pruned versions' shards to leave the workers", func() bool {
				disk := writesOnDisk(t, c)
				for v, w := range writes {
					if (v < first) != (disk[w] == 0) {
						return false
					}
				}
				return true
			})
		})
	}
}

// The storage quota bounds the bytes of all a user's versions: a write
// that would cross it is refused (ResourceExhausted, naming the quota and
// the use) before any shard is stored when its size is known, as soon as
// it passes the quota when not, and stores nothing; retention and Delete
// lower the use; other users are not bound by it.
func TestStorageQuota(t *testing.T) {
	c := quotaCluster(t, cluster.Options{Workers: 3}, map[string]quota.Limits{"bob": {StorageBytes: 1 << 20}})
	ctx := ctxTimeout(t, 2*time.Minute)
	bob := userClient(t, c, 0, "bob")
	files := c.Pools[0].Files()
	use := func() int64 {
		t.Helper()
		n, err := files.StorageUsed(ctx, "bob")
		if err != nil {
			t.Fatal(err)
		}
		return n
	}

	first, err := v1.NewFileServiceClient(bob.Conn()).Push(ctx, &v1.PushRequest{Filename: "a", FileData: make([]byte, 600<<10), KeepVersions: 1})
	if err != nil {
		t.Fatal(err)
	}
	if got := use(); got != 600<<10 {
		t.Fatalf("use after 600 KiB: %d", got)
	}
	disk := writesOnDisk(t, c)
	refused := func(what string, err error, want string) {
		t.Helper()
		st := status.Convert(err)
		if st.Code() != codes.ResourceExhausted || !strings.Contains(st.Message(), want) || !strings.Contains(st.Message(), "taskworker quota set") {
			t.Fatalf("%s: %v, want ResourceExhausted saying %q", what, err, want)
		}
	}
	_, err = bob.Push(ctx, "b", make([]byte, 500<<10))
	refused("a push over the quota", err, "storage quota of bob is 1 MiB; 600 KiB in use, this push needs 500 KiB")
	_, err = bob.Upload(ctx, "b", io.MultiReader(bytes.NewReader(make([]byte, 500<<10)))) // size unknown
	refused("an upload of unknown size over the quota", err, "storage quota of bob is 1 MiB; 600 KiB in use, this upload needs more than 424 KiB")
	_, err = bob.Revise(ctx, first.FileId, make([]byte, 1100<<10), 0)
	refused("a revision over the quota", err, "this revision needs 1.1 MiB")
	if list, err := bob.List(ctx); err != nil || len(list) != 1 {
		t.Fatalf("bob's files after the refusals: %d, %v; want 1", len(list), err)
	}
	waitFor(t, time.Minute, "the refused upload's shards to be dropped", func() bool {
		now := writesOnDisk(t, c)
		for w := range now {
			if disk[w] == 0 {
				return false
			}
		}
		return len(now) == len(disk)
	})
	if got := use(); got != 600<<10 {
		t.Fatalf("use after the refusals: %d", got)
	}

	// A revision may be as large as what retention frees (keep 1 here).
	if _, err := bob.Revise(ctx, first.FileId, make([]byte, 900<<10), 0); err != nil {
		t.Fatal(err)
	}
	if got := use(); got != 900<<10 {
		t.Fatalf("use after a revision that replaced 600 KiB by 900: %d", got)
	}
	// Another user is not bound by bob's quota.
	if _, err := userClient(t, c, 0, "dave").Push(ctx, "big", make([]byte, 2<<20)); err != nil {
		t.Fatal(err)
	}
	if err := bob.Delete(ctx, first.FileId); err != nil {
		t.Fatal(err)
	}
	if got := use(); got != 0 {
		t.Fatalf("use after deleting everything: %d", got)
	}
	if _, err := bob.Push(ctx, "c", make([]byte, 1<<20)); err != nil {
		t.Fatalf("a push up to the quota after a delete: %v", err)
	}
}

// With two pool replicas taking writes at once, the quota holds exactly:
// of ten 200 KiB pushes under a 1000 KiB quota, five commit, whatever the
// replica, and the use survives a restart of both.
func TestStorageQuotaAcrossReplicas(t *testing.T) {
	c := quotaCluster(t, cluster.Options{Workers: 3, Pools: 2}, map[string]quota.Limits{"bob": {StorageBytes: 1000 << 10}})
	ctx := ctxTimeout(t, 2*time.Minute)
	clients := []*taskworker.Client{userClient(t, c, 0, "bob"), userClient(t, c, 1, "bob")}
	var (
		wg       sync.WaitGroup
		mu       sync.Mutex
		ok, full int
	)
	for i := range 10 {
		wg.Go(func() {
			_, err := clients[i%2].Push(ctx, "f", make([]byte, 200<<10))
			mu.Lock()
			defer mu.Unlock()
			switch status.Code(err) {
			case codes.OK:
				ok++
			case codes.ResourceExhausted:
				full++
			default:
				t.Errorf("push %d: %v", i, err)
			}
		})
	}
	wg.Wait()
	if ok != 5 || full != 5 {
		t.Fatalf("%d pushes stored and %d refused, want 5 and 5", ok, full)
	}
	c.KillPool(0)
	c.KillPool(1)
	c.StartPool(0)
	c.StartPool(1)
	for p := range 2 {
		if n, err := c.Pools[p].Files().StorageUsed(ctx, "bob"); err != nil || n != 1000<<10 {
			t.Fatalf("pool %d after a restart: use %d, %v; want 1000 KiB", p, n, err)
		}
	}
}

// A user's use is counted only once a storage quota applies to them; one
// set later counts what their writes and deletes left, and holds from
// then on.
func TestStorageQuotaSetLater(t *testing.T) {
	var limit atomic.Int64
	c := quotaClusterFunc(t, cluster.Options{Workers: 3}, func(string) quota.Limits {
		return quota.Limits{StorageBytes: limit.Load()}
	})
	ctx := ctxTimeout(t, 2*time.Minute)
	erin := userClient(t, c, 0, "erin")
	var ids []string
	for _, n := range []int{300 << 10, 200 << 10, 2000} {
		info, err := erin.Push(ctx, "f", make([]byte, n))
		if err != nil {
			t.Fatal(err)
		}
		ids = append(ids, info.FileId)
	}
	if _, err := erin.Revise(ctx, ids[0], make([]byte, 100<<10), 0); err != nil {
		t.Fatal(err)
	}
	if err := erin.Delete(ctx, ids[1]); err != nil {
		t.Fatal(err)
	}
	want := int64(300<<10 + 100<<10 + 2000)
	if n, err := c.Pools[0].Files().StorageUsed(ctx, "erin"); err != nil || n != want {
		t.Fatalf("use before any quota: %d, %v; want %d", n, err, want)
	}
	limit.Store(1 << 20)
	_, err := erin.Push(ctx, "g", make([]byte, 700<<10))
	if st := status.Convert(err); st.Code() != codes.ResourceExhausted || !strings.Contains(st.Message(), "402 KiB in use") {
		t.Fatalf("a push over a quota set later: %v", err)
	}
	if _, err := erin.Push(ctx, "g", make([]byte, 600<<10)); err != nil {
		t.Fatal(err)
	}
	if err := erin.Delete(ctx, ids[0]); err != nil {
		t.Fatal(err)
	}
	if n, err := c.Pools[0].Files().StorageUsed(ctx, "erin"); err != nil || n != want-(400<<10)+(600<<10) {
		t.Fatalf("use under the quota: %d, %v; want %d", n, err, want-(400<<10)+(600<<10))
	}
}
