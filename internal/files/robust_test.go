package files_test

import (
	"bytes"
	"context"
	"fmt"
	"io"
	"maps"
	"os"
	"os/exec"
	"path/filepath"
	"strings"
	"testing"
	"time"

	clientv3 "go.etcd.io/etcd/client/v3"
	"google.golang.org/grpc/codes"
	"google.golang.org/grpc/status"

	"github.com/hivemind/taskworker"
	v1 "github.com/hivemind/taskworker/api/taskworker/v1"
	"github.com/hivemind/taskworker/internal/cluster"
	"github.com/hivemind/taskworker/internal/erasure"
	"github.com/hivemind/taskworker/internal/serving"
)

func adminStatus(t *testing.T, ctx context.Context, cl *taskworker.Client) *v1.StatusResponse {
	t.Helper()
	st, err := v1.NewAdminServiceClient(cl.Conn()).Status(ctx, &v1.StatusRequest{})
	if err != nil {
		t.Fatal(err)
	}
	return st
}

func workerDir(c *cluster.Cluster, id string) string { return filepath.Join(c.Dir(), "workers", id) }

// Shards deleted behind a worker's back, with no read to notice: the pool's
// comparison of the worker's inventory with the manifests finds them, Status
// reports them, and they are rebuilt.
func TestShardsDeletedBehindAWorkersBackAreFoundAndRebuilt(t *testing.T) {
	c := cluster.New(t, cluster.Options{Workers: 6})
	cl := c.Client(0)
	ctx := ctxTimeout(t, 2*time.Minute)
	data := randomBytes(20 * block)
	info, err := cl.Push(ctx, "big", data)
	if err != nil {
		t.Fatal(err)
	}
	if st := adminStatus(t, ctx, cl); st.FilesFull != 1 || st.Files != 1 || st.ShardsDamaged != 0 {
		t.Fatalf("before: %+v", st)
	}
	deleted := shardFiles(t, workerDir(c, "worker_003"))
	if len(deleted) == 0 {
		t.Fatal("worker_003 holds no shards")
	}
	for _, p := range deleted {
		if err := os.Remove(p); err != nil {
			t.Fatal(err)
		}
	}
	waitFor(t, time.Minute, fmt.Sprintf("%d deleted shards rebuilt", len(deleted)), func() bool {
		st := adminStatus(t, ctx, cl)
		return st.ShardsRebuilt >= int64(len(deleted)) && st.ShardsDamaged == 0 && st.FilesFull == 1
	})
	if err := c.Pools[0].Files().Verify(ctx); err != nil {
		t.Fatal(err)
	}
	if got, err := cl.Get(ctx, info.FileId); err != nil || !bytes.Equal(got, data) {
		t.Fatalf("read after repair: %d bytes, %v", len(got), err)
	}
}

// With one worker a file is a single copy; when its shards are deleted
// behind the worker's back, Status and Stat say it is lost, not "full".
func TestStatusTellsWhatIsReallyThere(t *testing.T) {
	c := cluster.New(t, cluster.Options{Workers: 1})
	cl := c.Client(0)
	ctx := ctxTimeout(t, time.Minute)
	info, err := cl.Push(ctx, "one", randomBytes(3*block))
	if err != nil {
		t.Fatal(err)
	}
	if _, err := cl.Revise(ctx, info.FileId, randomBytes(2*block), 0); err != nil {
		t.Fatal(err)
	}
	if _, err := cl.Push(ctx, "small", []byte("kept in etcd")); err != nil {
		t.Fatal(err)
	}
	st := adminStatus(t, ctx, cl)
	if st.Files != 2 || st.FilesSingleCopy != 2 || st.FilesFull != 1 || st.FilesReduced+st.FilesLost != 0 {
		t.Fatalf("two files, three versions (two single copies, one inline): %+v", st)
	}
	files, err := cl.List(ctx)
	if err != nil || len(files) != 2 {
		t.Fatalf("list: %v, %v", files, err)
	}
	for _, f := range files {
		want := v1.Redundancy_REDUNDANCY_SINGLE_COPY
		if f.Layout == "inline" {
			want = v1.Redundancy_REDUNDANCY_FULL
		}
		if f.Redundancy != want {
			t.Errorf("list: %s (%s) is %v, want %v", f.Filename, f.Layout, f.Redundancy, want)
		}
	}
	for _, p := range shardFiles(t, workerDir(c, "worker_001")) {
		if err := os.Remove(p); err != nil {
			t.Fatal(err)
		}
	}
	waitFor(t, time.Minute, "both versions reported lost", func() bool {
		st := adminStatus(t, ctx, cl)
		return st.FilesLost == 2 && st.FilesSingleCopy == 0 && st.ShardsDamaged > 0
	})
	hist, err := cl.History(ctx, info.FileId)
	if err != nil || len(hist) != 2 || hist[0].Redundancy != v1.Redundancy_REDUNDANCY_LOST || hist[1].Redundancy != v1.Redundancy_REDUNDANCY_LOST {
		t.Fatalf("history: %v, %v", hist, err)
	}
	// The cluster's invariant check reads every stored version: drop the
	// lost one.
	if err := cl.Delete(ctx, info.FileId); err != nil {
		t.Fatal(err)
	}
}

// shardConn calls a worker's ShardService directly, as its pool.
func shardConn(t *testing.T, c *cluster.Cluster, i int) (v1.ShardServiceClient, context.Context) {
	t.Helper()
	return v1.NewShardServiceClient(c.WorkerConn(i)), ctxTimeout(t, time.Minute)
}

func putShard(ctx context.Context, sc v1.ShardServiceClient, key *v1.ShardKey, data []byte) error {
	stream, err := sc.PutShard(ctx)
	if err != nil {
		return err
	}
	if err := stream.Send(&v1.PutShardRequest{Part: &v1.PutShardRequest_Key{Key: key}}); err != nil {
		return err
	}
	if err := stream.Send(&v1.PutShardRequest{Part: &v1.PutShardRequest_Data{Data: data}}); err != nil {
		return err
	}
	_, err = stream.CloseAndRecv()
	return err
}

// readShard reads a shard from a worker's ShardService, as its pool.
func readShard(t *testing.T, ctx context.Context, sc v1.ShardServiceClient, key *v1.ShardKey) []byte {
	t.Helper()
	stream, err := sc.GetShard(ctx, &v1.GetShardRequest{Key: key})
	if err != nil {
		t.Fatal(err)
	}
	var out []byte
	for {
		resp, err := stream.Recv()
		if err == io.EOF {
			return out
		}
		if err != nil {
			t.Fatalf("reading shard %v: %v", key, err)
		}
		out = append(out, resp.Data...)
	}
}

// A worker that serves forged data shards, stored with a valid on-disk
// checksum as a compromised worker would: a read still returns the bytes
// written (the forged shards fail the block's authentication, then their
// BLAKE3 sums, and parity stands in), and the forged shards are reported
// and rebuilt. (Parity shards are checked only when a read or a repair
// needs them.)
func TestForgedShardsAreReadAroundAndRepaired(t *testing.T) {
	c := cluster.New(t, cluster.Options{Workers: 3})
	cl := c.Client(0)
	ctx := ctxTimeout(t, time.Minute)
	data := randomBytes(3 * block)
	info, err := cl.Push(ctx, "f", data)
	if err != nil {
		t.Fatal(err)
	}
	layout, err := erasure.ParseLayout(info.Layout)
	if err != nil {
		t.Fatal(err)
	}
	// One data shard of every block is forged (parity makes up for one),
	// on whichever worker holds it.
	const damage = "/taskworker/damage/"
	forged := map[string]bool{} // damage record keys
	blocks := map[int64]bool{}  // blocks with a forged shard
	for i := range c.Workers {
		sc, wctx := shardConn(t, c, i)
		list, err := sc.ListShards(wctx, &v1.ListShardsRequest{})
		if err != nil {
			t.Fatal(err)
		}
		for {
			resp, err := list.Recv()
			if err == io.EOF {
				break
			}
			if err != nil {
				t.Fatal(err)
			}
			for _, k := range resp.Shards {
				if k.FileId != info.FileId || int(k.Shard) >= layout.Data || blocks[k.Block] {
					continue
				}
				shard := readShard(t, wctx, sc, k)
				shard[len(shard)/2] ^= 0x01
				if err := putShard(wctx, sc, k, shard); err != nil {
					t.Fatal(err)
				}
				forged[fmt.Sprintf("%s%s/%s/%d/%d", damage, k.FileId, k.WriteId, k.Block, k.Shard)] = true
				blocks[k.Block] = true
			}
		}
	}
	if len(forged) != 3 {
		t.Fatalf("forged %d data shards, want one in each of the 3 blocks", len(forged))
	}
	// Every forged shard is reported, as a damage record in etcd.
	etcd := c.EtcdClient()
	before, err := etcd.Get(ctx, damage, clientv3.WithPrefix(), clientv3.WithCountOnly())
	if err != nil {
		t.Fatal(err)
	}
	reports := etcd.Watch(ctx, damage, clientv3.WithPrefix(), clientv3.WithRev(before.Header.Revision+1))
	for range 3 {
		got, err := cl.Get(ctx, info.FileId)
		if err != nil || !bytes.Equal(got, data) {
			t.Fatalf("read with forged shards: %d bytes, %v", len(got), err)
		}
	}
	unreported := maps.Clone(forged)
	for len(unreported) > 0 {
		resp, ok := <-reports
		if !ok || resp.Err() != nil {
			t.Fatalf("forged shards never reported: %v (%v)", unreported, resp.Err())
		}
		for _, ev := range resp.Events {
			if ev.Type == clientv3.EventTypePut && !forged[string(ev.Kv.Key)] {
				t.Errorf("a shard that was not forged reported damaged: %s", ev.Kv.Key)
			}
			if ev.Type == clientv3.EventTypePut {
				delete(unreported, string(ev.Kv.Key))
			}
		}
	}
	waitFor(t, 30*time.Second, "the forged shards rebuilt", func() bool {
		resp, err := etcd.Get(ctx, damage, clientv3.WithPrefix(), clientv3.WithCountOnly())
		st, serr := cl.Stat(ctx, info.FileId, 0)
		return err == nil && resp.Count == 0 && serr == nil && st.Redundancy == v1.Redundancy_REDUNDANCY_FULL
	})
	got, err := cl.Get(ctx, info.FileId)
	if err != nil || !bytes.Equal(got, data) {
		t.Fatalf("read after the repair: %d bytes, %v", len(got), err)
	}
}

// The collector deletes the shards of this network's failed writes (found
// unreferenced twice, some time apart) and nothing it did not write: a
// shard of another network on the same worker stays.
func TestCollectorDeletesOnlyThisNetworksFailedWrites(t *testing.T) {
	c := cluster.New(t, cluster.Options{Workers: 2})
	ctx := ctxTimeout(t, time.Minute)
	sc, wctx := shardConn(t, c, 0)
	foreign := &v1.ShardKey{FileId: "aaaaaaaaaaaaaaaaaaaaaaaaaa", WriteId: "bbbbbbbbbbbbbbbbbbbbbbbbbb"}
	failed := &v1.ShardKey{FileId: "cccccccccccccccccccccccccc", WriteId: "dddddddddddddddddddddddddd"}
	for _, k := range []*v1.ShardKey{foreign, failed} {
		if err := putShard(wctx, sc, k, []byte("shard bytes")); err != nil {
			t.Fatal(err)
		}
	}
	// The failed write is this network's: its intent record is in etcd,
	// as a write that stopped before its commit leaves it.
	etcd := c.EtcdClient()
	started := time.Now().Add(-time.Hour).UnixMilli()
	if _, err := etcd.Put(ctx, "/taskworker/writes/"+failed.FileId+"/"+failed.WriteId, fmt.Sprint(started)); err != nil {
		t.Fatal(err)
	}
	has := func(k *v1.ShardKey) bool {
		stream, err := sc.GetShard(wctx, &v1.GetShardRequest{Key: k})
		if err != nil {
			t.Fatal(err)
		}
		_, err = stream.Recv()
		return status.Code(err) != codes.NotFound
	}
	waitFor(t, time.Minute, "the failed write's shard collected", func() bool { return !has(failed) })
	if !has(foreign) {
		t.Fatal("the collector deleted a shard this network never wrote")
	}
	waitFor(t, time.Minute, "the collected write's intent dropped", func() bool {
		resp, err := etcd.Get(ctx, "/taskworker/writes/", clientv3.WithPrefix(), clientv3.WithCountOnly())
		return err == nil && resp.Count == 0
	})
}

// A worker whose shard directory is deleted under it recreates it, the
// pool finds every shard it held missing, and rebuilds them.
func TestLostShardDirectoryIsRebuilt(t *testing.T) {
	c := cluster.New(t, cluster.Options{Workers: 6})
	cl := c.Client(0)
	ctx := ctxTimeout(t, 2*time.Minute)
	data := randomBytes(12 * block)
	info, err := cl.Push(ctx, "f", data)
	if err != nil {
		t.Fatal(err)
	}
	held := len(shardFiles(t, workerDir(c, "worker_002")))
	if held == 0 {
		t.Fatal("worker_002 holds no shards")
	}
	if err := os.RemoveAll(filepath.Join(workerDir(c, "worker_002"), "shards", "shards")); err != nil {
		t.Fatal(err)
	}
	waitFor(t, time.Minute, fmt.Sprintf("%d shards of the lost directory rebuilt", held), func() bool {
		st := adminStatus(t, ctx, cl)
		return st.ShardsRebuilt >= int64(held) && st.ShardsDamaged == 0 && st.FilesFull == 1
	})
	if got, err := cl.Get(ctx, info.FileId); err != nil || !bytes.Equal(got, data) {
		t.Fatalf("read after repair: %d bytes, %v", len(got), err)
	}
}

// A worker whose disk is full refuses shards with ResourceExhausted; the
// pool places them on other workers, and reads and repair go on. It needs
// root, to mount a small tmpfs as the worker's data directory.
func TestDiskFullWorkerRefusesShardsAndThePoolPlacesThemElsewhere(t *testing.T) {
	if os.Geteuid() != 0 {
		t.Skip("needs root to mount a small tmpfs as a worker's data directory (run the test as root)")
	}
	// Seven workers besides the full one, so that a 4+2 block that loses
	// a worker has a seventh to be rebuilt on.
	c := cluster.New(t, cluster.Options{Workers: 7, LeaseTTL: 5 * time.Second})
	dir := workerDir(c, "worker_full")
	if err := os.MkdirAll(dir, 0o755); err != nil {
		t.Fatal(err)
	}
	if out, err := exec.Command("mount", "-t", "tmpfs", "-o", "size=256k", "tmpfs", dir).CombinedOutput(); err != nil {
		t.Skipf("needs to mount a tmpfs (mount: %v: %s)", err, out)
	}
	t.Cleanup(func() { exec.Command("umount", "-l", dir).Run() })
	full := c.AddWorker("worker_full", 0)
	c.WaitWorkers(8)
	// Leave the filesystem a few KiB: less than one shard.
	filler := make([]byte, 4<<10)
	f, err := os.Create(filepath.Join(dir, "filler"))
	if err != nil {
		t.Fatal(err)
	}
	for {
		if _, err := f.Write(filler); err != nil {
			break
		}
	}
	f.Close()
	os.Truncate(filepath.Join(dir, "filler"), mustSize(t, filepath.Join(dir, "filler"))-8<<10)

	sc, wctx := shardConn(t, c, full)
	err = putShard(wctx, sc, &v1.ShardKey{FileId: "aaaaaaaaaaaaaaaaaaaaaaaaaa", WriteId: "bbbbbbbbbbbbbbbbbbbbbbbbbb"}, randomBytes(64<<10))
	if st := status.Convert(err); st.Code() != codes.ResourceExhausted || !strings.Contains(st.Message(), "disk is full") {
		t.Fatalf("a shard on a full disk: %v; want ResourceExhausted saying the disk is full", err)
	}

	cl := c.Client(0)
	ctx := ctxTimeout(t, 2*time.Minute)
	stored := map[string][]byte{}
	for i := range 6 {
		data := randomBytes(6 * block)
		info, err := cl.Push(ctx, fmt.Sprint(i), data)
		if err != nil {
			t.Fatalf("push %d with a full worker: %v", i, err)
		}
		stored[info.FileId] = data
	}
	if n := len(shardFiles(t, dir)); n != 0 {
		t.Fatalf("the full worker holds %d shards", n)
	}
	// Repair goes on around the full worker: lose another one.
	c.KillWorker(1)
	for id, data := range stored {
		if got, err := cl.Get(ctx, id); err != nil || !bytes.Equal(got, data) {
			t.Fatalf("read with a full worker and a lost one: %d bytes, %v", len(got), err)
		}
	}
	var st *v1.StatusResponse
	t.Cleanup(func() { t.Logf("status: %+v", st) })
	waitFor(t, time.Minute, "the lost worker's shards rebuilt on the others", func() bool {
		st = adminStatus(t, ctx, cl)
		return st.FilesFull == int64(len(stored)) && st.ShardsRebuilt > 0
	})
	if n := len(shardFiles(t, dir)); n != 0 {
		t.Fatalf("the full worker holds %d shards after repair", n)
	}
}

func mustSize(t *testing.T, path string) int64 {
	fi, err := os.Stat(path)
	if err != nil {
		t.Fatal(err)
	}
	return fi.Size()
}

// An upload that declares a size larger than the pool takes is refused
// before any byte is sent, with what the limit is; a negative size, or
// bytes that do not match the size declared, are errors of the caller.
// None is committed, and each says so.
func TestUploadOfATooLargeFileIsRefusedBeforeTheBytes(t *testing.T) {
	cfg := testFilesConfig(64 << 10)
	cfg.MaxFileBytes = 1 << 30
	c := cluster.New(t, cluster.Options{Workers: 3, Files: &cfg})
	ctx := ctxTimeout(t, time.Minute)
	fs := v1.NewFileServiceClient(c.Client(0).Conn())
	for _, tc := range []struct {
		size int64
		send []byte
		code codes.Code
		msg  string
	}{
		{1<<30 + 1, nil, codes.ResourceExhausted, "larger than this network stores in one file (1073741824 bytes)"},
		{-1, nil, codes.InvalidArgument, "declares a size of -1 bytes"},
		{100, nil, codes.InvalidArgument, "ended after 0 of the 100 bytes its header declares"},
		{100, randomBytes(10 << 10), codes.InvalidArgument, "sent more than the 100 bytes its header declares"},
		{20 << 10, randomBytes(10 << 10), codes.InvalidArgument, "ended after 10240 of the 20480 bytes"},
	} {
		stream, err := fs.Upload(ctx)
		if err != nil {
			t.Fatal(err)
		}
		if err := stream.Send(&v1.UploadRequest{Part: &v1.UploadRequest_Header{Header: &v1.UploadHeader{Filename: "huge", Size: tc.size}}}); err != nil {
			t.Fatal(err)
		}
		if tc.send != nil {
			_ = stream.Send(&v1.UploadRequest{Part: &v1.UploadRequest_Data{Data: tc.send}})
		}
		_, err = stream.CloseAndRecv()
		if st := status.Convert(err); st.Code() != tc.code || !strings.Contains(st.Message(), tc.msg) || !serving.IsNotCommitted(err) {
			t.Errorf("upload declaring %d bytes, sending %d: %v (not committed: %v); want %v saying %q, not committed",
				tc.size, len(tc.send), err, serving.IsNotCommitted(err), tc.code, tc.msg)
		}
	}
	if files, err := c.Client(0).List(ctx); err != nil || len(files) != 0 {
		t.Fatalf("files after refused uploads: %v, %v", files, err)
	}
}

// An upload that does not declare its size is refused as soon as it passes
// the pool's limit, not after the rest of its bytes; one that does, on its
// header. Neither leaves a file.
func TestUploadPastTheLimitIsRefusedMidStream(t *testing.T) {
	cfg := testFilesConfig(4 << 10)
	cfg.MaxFileBytes = 1 << 20
	// 4 KiB blocks of a fast stream keep a busy machine's workers from
	// renewing short leases.
	c := cluster.New(t, cluster.Options{Workers: 3, Files: &cfg, LeaseTTL: 10 * time.Second})
	ctx := ctxTimeout(t, 2*time.Minute)
	stream, err := v1.NewFileServiceClient(c.Client(0).Conn()).Upload(ctx)
	if err != nil {
		t.Fatal(err)
	}
	if err := stream.Send(&v1.UploadRequest{Part: &v1.UploadRequest_Header{Header: &v1.UploadHeader{Filename: "big"}}}); err != nil {
		t.Fatal(err)
	}
	const total = 64 << 20
	chunk, sent := randomBytes(64<<10), 0
	for sent < total {
		if err := stream.Send(&v1.UploadRequest{Part: &v1.UploadRequest_Data{Data: chunk}}); err != nil {
			break // the pool answered: CloseAndRecv has its status
		}
		sent += len(chunk)
	}
	_, err = stream.CloseAndRecv()
	if st := status.Convert(err); st.Code() != codes.ResourceExhausted || !strings.Contains(st.Message(), "larger than this network stores in one file") || !serving.IsNotCommitted(err) {
		t.Fatalf("an upload past the limit: %v; want ResourceExhausted, not committed", err)
	}
	if sent == total {
		t.Fatalf("the pool took all %d bytes before refusing", total)
	}
	t.Logf("refused after %d of %d bytes sent", sent, total)
	// The client declares a reader's size when it knows it: refused on the
	// header.
	_, err = c.Client(0).Upload(ctx, "big", bytes.NewReader(randomBytes(3<<20)))
	if st := status.Convert(err); st.Code() != codes.ResourceExhausted || !strings.Contains(st.Message(), "the file (3145728 bytes) is larger") {
		t.Fatalf("an upload of a bytes.Reader past the limit: %v; want ResourceExhausted naming its declared size", err)
	}
	if list, err := c.Client(0).List(ctx); err != nil || len(list) != 0 {
		t.Fatalf("files after the refused upload: %v, %v", list, err)
	}
}

// A write whose sender stalls for longer than the collector's minimum age,
// with shards already stored, keeps them: the write tends its intent. It
// commits, and every block reads back.
func TestStalledWriteKeepsItsShards(t *testing.T) {
	c := cluster.New(t, cluster.Options{Workers: 3}) // GCMinAge and GCInterval of 3s
	cl := c.Client(0)
	ctx := ctxTimeout(t, 2*time.Minute)
	stream, err := v1.NewFileServiceClient(cl.Conn()).Upload(ctx)
	if err != nil {
		t.Fatal(err)
	}
	data := randomBytes(20 * block)
	if err := stream.Send(&v1.UploadRequest{Part: &v1.UploadRequest_Header{Header: &v1.UploadHeader{Filename: "slow", Size: int64(len(data))}}}); err != nil {
		t.Fatal(err)
	}
	half := len(data) / 2
	if err := stream.Send(&v1.UploadRequest{Part: &v1.UploadRequest_Data{Data: data[:half]}}); err != nil {
		t.Fatal(err)
	}
	// Several collector passes, each of which sees the first half's
	// shards older than GCMinAge.
	waitFor(t, time.Minute, "the first half's shards stored", func() bool {
		return len(shardFiles(t, workerDir(c, "worker_001"))) >= 5
	})
	time.Sleep(12 * time.Second)
	if err := stream.Send(&v1.UploadRequest{Part: &v1.UploadRequest_Data{Data: data[half:]}}); err != nil {
		t.Fatal(err)
	}
	resp, err := stream.CloseAndRecv()
	if err != nil {
		t.Fatal(err)
	}
	if got, err := cl.Get(ctx, resp.Info.FileId); err != nil || !bytes.Equal(got, data) {
		t.Fatalf("read back: %d bytes, %v", len(got), err)
	}
	if err := c.Pools[0].Files().Verify(ctx); err != nil {
		t.Fatalf("a stalled write lost shards: %v", err)
	}
}

// Status remembers which manifests it found inline; files deleted and
// pushed since, inline or not, are counted as they are now.
func TestStatusCountsSmallFilesAsTheyChange(t *testing.T) {
	c := cluster.New(t, cluster.Options{Workers: 3})
	cl := c.Client(0)
	ctx := ctxTimeout(t, time.Minute)
	var ids []string
	var bytes int64
	for i := range 5 {
		info, err := cl.Push(ctx, fmt.Sprint("small-", i), randomBytes(100+i))
		if err != nil {
			t.Fatal(err)
		}
		ids = append(ids, info.FileId)
		bytes += info.Size
	}
	want := func(when string, files, stored int64) {
		t.Helper()
		st := adminStatus(t, ctx, cl)
		if st.Files != files || st.BytesStored != stored || st.FilesFull != files {
			t.Fatalf("%s: want %d files, %d bytes, all full: %+v", when, files, stored, st)
		}
	}
	want("pushed", 5, bytes)
	want("again", 5, bytes)
	if err := cl.Delete(ctx, ids[1]); err != nil {
		t.Fatal(err)
	}
	bytes -= 101
	want("one deleted", 4, bytes)
	if _, err := cl.Push(ctx, "small-new", randomBytes(7)); err != nil {
		t.Fatal(err)
	}
	if _, err := cl.Push(ctx, "large", randomBytes(2*block)); err != nil {
		t.Fatal(err)
	}
	bytes += 7 + 2*block
	want("two pushed", 6, bytes)
}
