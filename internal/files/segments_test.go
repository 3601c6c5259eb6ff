package files_test

import (
	"bytes"
	"context"
	"fmt"
	"os"
	"testing"
	"time"

	clientv3 "go.etcd.io/etcd/client/v3"
	"google.golang.org/grpc/codes"
	"google.golang.org/grpc/status"

	v1 "github.com/hivemind/taskworker/api/taskworker/v1"
	"github.com/hivemind/taskworker/internal/cluster"
	"github.com/hivemind/taskworker/internal/files"
	"github.com/hivemind/taskworker/internal/serving"
)

// testFilesConfig is the cluster's file configuration for tests (see
// cluster.Options.Files) at another block size.
func testFilesConfig(blockSize int) files.Config {
	cfg := files.DefaultConfig("")
	cfg.BlockSize = blockSize
	cfg.RepairGrace = 2 * time.Second
	cfg.RepairInterval = time.Second
	cfg.InventoryInterval = time.Second
	cfg.GCInterval = 3 * time.Second
	cfg.GCMinAge = 3 * time.Second
	return cfg
}

// segmentBlocks is the segment size of the segment tests: a few hundred
// KiB at 4 KiB blocks make a dozen segments or more.
const segmentBlocks = 4

// segmentedCluster starts a cluster whose files have 4 KiB blocks and
// segments of segmentBlocks. Thousands of tiny shards make writes long on
// a busy machine: leases and the collector's minimum age are generous, so
// that a stalled write is neither failed over nor collected.
func segmentedCluster(t *testing.T, workers int) *cluster.Cluster {
	cfg := testFilesConfig(4 << 10)
	cfg.SegmentBlocks = segmentBlocks
	cfg.GCMinAge = time.Minute
	return cluster.New(t, cluster.Options{Workers: workers, Files: &cfg, LeaseTTL: 10 * time.Second})
}

// keysUnder counts the etcd keys under a prefix.
func keysUnder(t *testing.T, etcd *clientv3.Client, prefix string) int64 {
	t.Helper()
	ctx, cancel := context.WithTimeout(context.Background(), 30*time.Second)
	defer cancel()
	resp, err := etcd.Get(ctx, prefix, clientv3.WithPrefix(), clientv3.WithCountOnly())
	if err != nil {
		t.Fatal(err)
	}
	return resp.Count
}

// A file of many segments goes through a file's whole life: upload, read
// back whole and in ranges across segments, revise, history, the change
// feed, a worker's loss repaired segment by segment, delete.
func TestSegmentedFileLifecycle(t *testing.T) {
	c := segmentedCluster(t, 3)
	cl := c.Client(0)
	etcd := c.EtcdClient()
	ctx := ctxTimeout(t, 5*time.Minute)

	v1data := randomBytes(256<<10 + 1234) // 65 blocks: 17 segments
	info, err := cl.Upload(ctx, "big", bytes.NewReader(v1data))
	if err != nil {
		t.Fatal(err)
	}
	id := info.FileId
	if info.Layout != "2+1" || info.Size != int64(len(v1data)) {
		t.Fatalf("uploaded: %v", info)
	}
	segs := "/taskworker/segments/" + id + "/"
	if n := keysUnder(t, etcd, segs); n != 17 {
		t.Fatalf("%d segments in etcd, want 17", n)
	}
	head, err := etcd.Get(ctx, "/taskworker/manifests/"+id+"/", clientv3.WithPrefix())
	if err != nil || len(head.Kvs) != 1 || len(head.Kvs[0].Value) > 2<<10 {
		t.Fatalf("the head manifest: %v, %v", head, err)
	}
	_, cursor, err := cl.Sync(ctx, "")
	if err != nil {
		t.Fatal(err)
	}

	if got, err := cl.Get(ctx, id); err != nil || !bytes.Equal(got, v1data) {
		t.Fatalf("read back: %d bytes, %v", len(got), err)
	}
	for _, r := range []struct{ off, length int64 }{
		{segmentBlocks*4<<10 - 10, 20},          // across the first segment boundary
		{int64(len(v1data)) - 5000, 5000},       // the last segment, a partial block
		{20 * 4 << 10, 3 * segmentBlocks << 12}, // three whole segments
	} {
		var buf bytes.Buffer
		if _, err := cl.DownloadRange(ctx, id, 0, r.off, r.length, &buf); err != nil || !bytes.Equal(buf.Bytes(), v1data[r.off:r.off+r.length]) {
			t.Fatalf("range %d+%d: %d bytes, %v", r.off, r.length, buf.Len(), err)
		}
	}

	v2data := randomBytes(128<<10 + 77) // 33 blocks: 9 segments
	if v2, err := cl.ReviseFrom(ctx, id, bytes.NewReader(v2data), 1); err != nil || v2.Version != 2 {
		t.Fatalf("revise: %v, %v", v2, err)
	}
	if n := keysUnder(t, etcd, segs); n != 17+9 {
		t.Fatalf("%d segments after the revision, want %d", n, 17+9)
	}
	changes, _, err := cl.Sync(ctx, cursor)
	if err != nil || len(changes) != 1 || changes[0].Kind != v1.FileChange_KIND_REVISED || changes[0].Version != 2 {
		t.Fatalf("changes since the upload: %v, %v", changes, err)
	}
	hist, err := cl.History(ctx, id)
	if err != nil || len(hist) != 2 || hist[0].Size != int64(len(v2data)) || hist[1].Size != int64(len(v1data)) {
		t.Fatalf("history: %v, %v", hist, err)
	}
	for _, h := range hist {
		if h.Redundancy != v1.Redundancy_REDUNDANCY_FULL {
			t.Fatalf("version %d: %v", h.Version, h.Redundancy)
		}
	}
	if st := adminStatus(t, ctx, cl); st.Files != 1 || st.FilesFull != 2 || st.BytesStored != int64(len(v1data)+len(v2data)) {
		t.Fatalf("status: %+v", st)
	}

	// A worker lost and another added: every block loses a shard, which
	// repair rebuilds on the new worker, rewriting every segment.
	c.KillWorker(2)
	c.AddWorker("worker_new", 0)
	waitFor(t, 3*time.Minute, "both versions back at full redundancy", func() bool {
		st := adminStatus(t, ctx, cl)
		return st.Workers == 3 && st.FilesFull == 2 && st.ShardsRebuilt > 0 && st.RepairsPending == 0
	})
	rewritten := 0
	resp, err := etcd.Get(ctx, segs, clientv3.WithPrefix(), clientv3.WithKeysOnly())
	if err != nil {
		t.Fatal(err)
	}
	for _, kv := range resp.Kvs {
		if kv.ModRevision != kv.CreateRevision {
			rewritten++
		}
	}
	if rewritten != len(resp.Kvs) {
		t.Fatalf("repair rewrote %d of %d segments", rewritten, len(resp.Kvs))
	}
	t.Logf("repair rewrote %d of %d segments: %+v", rewritten, len(resp.Kvs), adminStatus(t, ctx, cl))
	if err := c.Pools[0].Files().Verify(ctx); err != nil {
		t.Fatal(err)
	}
	for v, want := range map[int64][]byte{1: v1data, 2: v2data} {
		var buf bytes.Buffer
		if _, err := cl.Download(ctx, id, v, &buf); err != nil || !bytes.Equal(buf.Bytes(), want) {
			t.Fatalf("version %d after repair: %d bytes, %v", v, buf.Len(), err)
		}
	}

	if err := cl.Delete(ctx, id); err != nil {
		t.Fatal(err)
	}
	if n := keysUnder(t, etcd, "/taskworker/segments/"); n != 0 {
		t.Fatalf("%d segments left after the delete", n)
	}
	if n := keysUnder(t, etcd, "/taskworker/manifests/"); n != 0 {
		t.Fatalf("%d manifests left after the delete", n)
	}
}

// A segmented revision that fails after its segments are written (the
// file moved on before its commit) is refused as not committed, leaves no
// version, and its segments go; so do those of writes that failed without
// cleaning up, which only the collector sees.
func TestFailedSegmentedWriteIsInvisibleAndCollected(t *testing.T) {
	c := segmentedCluster(t, 3)
	cl := c.Client(0)
	etcd := c.EtcdClient()
	ctx := ctxTimeout(t, 3*time.Minute)
	base, err := cl.Upload(ctx, "f", bytes.NewReader(randomBytes(100<<10))) // 25 blocks: 7 segments
	if err != nil {
		t.Fatal(err)
	}
	id := base.FileId
	segs := "/taskworker/segments/" + id + "/"
	if n := keysUnder(t, etcd, segs); n != 7 {
		t.Fatalf("%d segments, want 7", n)
	}
	_, cursor, err := cl.Sync(ctx, "")
	if err != nil {
		t.Fatal(err)
	}

	// A revision of version 1 sends every byte; before it ends, another
	// revision makes version 2.
	stream, err := v1.NewFileServiceClient(cl.Conn()).Upload(ctx)
	if err != nil {
		t.Fatal(err)
	}
	data := randomBytes(150 << 10)
	if err := stream.Send(&v1.UploadRequest{Part: &v1.UploadRequest_Header{Header: &v1.UploadHeader{FileId: id, ExpectedVersion: 1, Size: int64(len(data))}}}); err != nil {
		t.Fatal(err)
	}
	for off := 0; off < len(data); off += 64 << 10 {
		if err := stream.Send(&v1.UploadRequest{Part: &v1.UploadRequest_Data{Data: data[off:min(off+64<<10, len(data))]}}); err != nil {
			t.Fatal(err)
		}
	}
	if _, err := cl.Revise(ctx, id, []byte("small"), 1); err != nil {
		t.Fatal(err)
	}
	_, err = stream.CloseAndRecv()
	if st := status.Convert(err); st.Code() != codes.FailedPrecondition || !serving.IsNotCommitted(err) {
		t.Fatalf("the revision of a version that moved on: %v (not committed: %v); want FailedPrecondition, not committed", err, serving.IsNotCommitted(err))
	}
	hist, err := cl.History(ctx, id)
	if err != nil || len(hist) != 2 || hist[0].Version != 2 || hist[0].Size != 5 {
		t.Fatalf("history: %v, %v", hist, err)
	}
	if changes, _, err := cl.Sync(ctx, cursor); err != nil || len(changes) != 1 || changes[0].Version != 2 {
		t.Fatalf("changes since the first version: %v, %v; want the small revision alone", changes, err)
	}
	if st := adminStatus(t, ctx, cl); st.Files != 1 || st.FilesFull+st.FilesSingleCopy != 2 || st.FilesLost+st.FilesReduced != 0 {
		t.Fatalf("status: %+v", st)
	}
	waitFor(t, time.Minute, "the failed revision's segments deleted", func() bool { return keysUnder(t, etcd, segs) == 7 })

	// Segments a write left behind: one with its intent (a write that
	// failed and whose pool died), one with none (its intent collected).
	for _, w := range []struct {
		write  string
		intent bool
	}{{"eeeeeeeeeeeeeeeeeeeeeeeeee", true}, {"ffffffffffffffffffffffffff", false}} {
		if w.intent {
			if _, err := etcd.Put(ctx, "/taskworker/writes/"+id+"/"+w.write, fmt.Sprint(time.Now().Add(-time.Hour).UnixMilli())); err != nil {
				t.Fatal(err)
			}
		}
		for n := range 3 {
			if _, err := etcd.Put(ctx, fmt.Sprintf("%s%s/%08d", segs, w.write, n), `{"sums":"","workers":[],"placement":[]}`); err != nil {
				t.Fatal(err)
			}
		}
	}
	waitFor(t, time.Minute, "the left-behind segments collected", func() bool {
		return keysUnder(t, etcd, segs) == 7 && keysUnder(t, etcd, "/taskworker/writes/"+id+"/eeeeeeeeeeeeeeeeeeeeeeeeee") == 0
	})
	var buf bytes.Buffer
	if _, err := cl.Download(ctx, id, 1, &buf); err != nil || buf.Len() != 100<<10 {
		t.Fatalf("version 1 after collection: %d bytes, %v", buf.Len(), err)
	}
}

// The comparison of the workers' inventories with the manifests reads the
// segments: shards deleted behind a worker's back are found, reported and
// rebuilt in place.
func TestSegmentedShardsDeletedBehindAWorkersBackAreRebuilt(t *testing.T) {
	c := segmentedCluster(t, 3)
	cl := c.Client(0)
	ctx := ctxTimeout(t, 3*time.Minute)
	data := randomBytes(100 << 10) // 25 blocks: 7 segments
	info, err := cl.Upload(ctx, "f", bytes.NewReader(data))
	if err != nil {
		t.Fatal(err)
	}
	deleted := shardFiles(t, workerDir(c, "worker_002"))
	if len(deleted) != 25 {
		t.Fatalf("worker_002 holds %d shards, want one of each of the 25 blocks", len(deleted))
	}
	for _, p := range deleted {
		if err := os.Remove(p); err != nil {
			t.Fatal(err)
		}
	}
	waitFor(t, 2*time.Minute, "the deleted shards rebuilt", func() bool {
		st := adminStatus(t, ctx, cl)
		return st.ShardsRebuilt >= int64(len(deleted)) && st.ShardsDamaged == 0 && st.FilesFull == 1
	})
	if got, err := cl.Get(ctx, info.FileId); err != nil || !bytes.Equal(got, data) {
		t.Fatalf("read after repair: %d bytes, %v", len(got), err)
	}
}
