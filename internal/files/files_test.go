package files_test

import (
	"bytes"
	"context"
	"crypto/rand"
	"errors"
	"fmt"
	mrand "math/rand/v2"
	"os"
	"path/filepath"
	"strings"
	"testing"
	"time"

	"google.golang.org/grpc/codes"
	"google.golang.org/grpc/status"

	"github.com/hivemind/taskworker"
	v1 "github.com/hivemind/taskworker/api/taskworker/v1"
	"github.com/hivemind/taskworker/internal/cluster"
)

const block = 64 << 10 // the cluster's block size

func ctxTimeout(t *testing.T, d time.Duration) context.Context {
	ctx, cancel := context.WithTimeout(context.Background(), d)
	t.Cleanup(cancel)
	return ctx
}

func randomBytes(n int) []byte {
	b := make([]byte, n)
	_, _ = rand.Read(b)
	return b
}

// Random files of many sizes round-trip byte for byte under every layout.
func TestRoundTripAcrossLayouts(t *testing.T) {
	sizes := []int{0, 1, 7, block - 1, block, block + 1, 5*block + 123, 1<<20 + mrand.IntN(block)}
	for _, tc := range []struct {
		workers int
		layout  string
	}{{1, "1+0"}, {2, "1+1"}, {3, "2+1"}, {6, "4+2"}} {
		t.Run(tc.layout, func(t *testing.T) {
			c := cluster.New(t, cluster.Options{Workers: tc.workers})
			cl := c.Client(0)
			ctx := ctxTimeout(t, time.Minute)
			for _, n := range sizes {
				data := randomBytes(n)
				for _, via := range []string{"push", "upload"} {
					var info *taskworker.FileInfo
					var err error
					if via == "push" {
						info, err = cl.Push(ctx, fmt.Sprintf("f%d", n), data)
					} else {
						info, err = cl.Upload(ctx, fmt.Sprintf("f%d", n), bytes.NewReader(data))
					}
					if err != nil {
						t.Fatalf("%s %d bytes: %v", via, n, err)
					}
					wantLayout := tc.layout
					if n <= 4<<10 {
						wantLayout = "inline" // kept in etcd
					}
					if info.Layout != wantLayout || info.Size != int64(n) || info.Version != 1 {
						t.Errorf("%s %d bytes: %v", via, n, info)
					}
					got, err := cl.Get(ctx, info.FileId)
					if err != nil || !bytes.Equal(got, data) {
						t.Fatalf("%s %d bytes: read back %d bytes, %v", via, n, len(got), err)
					}
					unary, err := v1.NewFileServiceClient(cl.Conn()).Get(ctx, &v1.GetRequest{FileId: info.FileId})
					if err != nil || !bytes.Equal(unary.FileData, data) {
						t.Fatalf("unary Get of %d bytes: %d bytes, %v", n, len(unary.GetFileData()), err)
					}
					if n > 10 {
						off, length := int64(mrand.IntN(n-5)), int64(5)
						var buf bytes.Buffer
						if _, err := cl.DownloadRange(ctx, info.FileId, 0, off, length, &buf); err != nil || !bytes.Equal(buf.Bytes(), data[off:off+length]) {
							t.Fatalf("range %d+%d of %d: %q, %v", off, length, n, buf.Bytes(), err)
						}
					}
				}
			}
		})
	}
}

func TestReviseHistoryAndConflicts(t *testing.T) {
	c := cluster.New(t, cluster.Options{Workers: 3})
	cl := c.Client(0)
	ctx := ctxTimeout(t, time.Minute)
	info, err := cl.Push(ctx, "notes.txt", []byte("one"))
	if err != nil {
		t.Fatal(err)
	}
	id := info.FileId
	if v2, err := cl.Revise(ctx, id, []byte("two"), 1); err != nil || v2.Version != 2 || v2.Filename != "notes.txt" {
		t.Fatalf("revise at 1: %v, %v", v2, err)
	}
	_, err = cl.Revise(ctx, id, []byte("stale"), 1)
	if st := status.Convert(err); st.Code() != codes.FailedPrecondition || !strings.Contains(st.Message(), "is at version 2, not 1") {
		t.Fatalf("revise of a stale version: %v", err)
	}
	if v3, err := cl.Revise(ctx, id, []byte("three"), 0); err != nil || v3.Version != 3 {
		t.Fatalf("unconditional revise: %v, %v", v3, err)
	}
	hist, err := cl.History(ctx, id)
	if err != nil || len(hist) != 3 || hist[0].Version != 3 || hist[2].Version != 1 {
		t.Fatalf("history: %v, %v", hist, err)
	}
	var old bytes.Buffer
	if _, err := cl.Download(ctx, id, 1, &old); err != nil || old.String() != "one" {
		t.Fatalf("version 1: %q, %v", old.String(), err)
	}
	if _, err := cl.Stat(ctx, id, 9); status.Code(err) != codes.NotFound {
		t.Fatalf("stat of a missing version: %v", err)
	}
	if _, err := cl.Revise(ctx, "aaaaaaaaaaaaaaaaaaaaaaaaaa", []byte("x"), 0); status.Code(err) != codes.NotFound {
		t.Fatalf("revise of a missing file: %v", err)
	}
	if err := cl.Delete(ctx, id); err != nil {
		t.Fatal(err)
	}
	if _, err := cl.Get(ctx, id); status.Code(err) != codes.NotFound {
		t.Fatalf("get after delete: %v", err)
	}
}

func TestAnotherUsersFileIsNotFound(t *testing.T) {
	c := cluster.New(t, cluster.Options{Workers: 2})
	ctx := ctxTimeout(t, time.Minute)
	admin := c.Client(0)
	aTok, _ := admin.CreateToken(ctx, "alice", "")
	bTok, _ := admin.CreateToken(ctx, "bob", "")
	alice, bob := c.ClientWithToken(0, aTok), c.ClientWithToken(0, bTok)
	info, err := alice.Push(ctx, "secret.txt", []byte("alice's"))
	if err != nil {
		t.Fatal(err)
	}
	for name, err := range map[string]error{
		"get":    func() error { _, err := bob.Get(ctx, info.FileId); return err }(),
		"stat":   func() error { _, err := bob.Stat(ctx, info.FileId, 0); return err }(),
		"revise": func() error { _, err := bob.Revise(ctx, info.FileId, []byte("bob's"), 0); return err }(),
		"delete": bob.Delete(ctx, info.FileId),
		"hist":   func() error { _, err := bob.History(ctx, info.FileId); return err }(),
	} {
		if status.Code(err) != codes.NotFound {
			t.Errorf("bob's %s of alice's file: %v; want NotFound", name, err)
		}
	}
	if files, _ := bob.List(ctx); len(files) != 0 {
		t.Errorf("bob lists %v", files)
	}
	if changes, _, _ := bob.Sync(ctx, ""); len(changes) != 0 {
		t.Errorf("bob syncs %v", changes)
	}
	if got, err := alice.Get(ctx, info.FileId); err != nil || string(got) != "alice's" {
		t.Errorf("alice's own file: %q, %v", got, err)
	}
}

func TestSynchronous(t *testing.T) {
	c := cluster.New(t, cluster.Options{Workers: 3})
	cl := c.Client(0)
	ctx := ctxTimeout(t, time.Minute)
	a, _ := cl.Push(ctx, "a", []byte("a"))
	b, _ := cl.Push(ctx, "b", []byte("b"))
	all, cursor, err := cl.Sync(ctx, "")
	if err != nil || len(all) != 2 {
		t.Fatalf("sync from the start: %v, %v", all, err)
	}
	if changes, again, _ := cl.Sync(ctx, cursor); len(changes) != 0 || again != cursor {
		t.Fatalf("sync with nothing new: %v, %s -> %s", changes, cursor, again)
	}
	cl.Revise(ctx, a.FileId, []byte("a2"), 0)
	cl.Delete(ctx, b.FileId)
	d, _ := cl.Push(ctx, "d", []byte("d"))
	changes, _, err := cl.Sync(ctx, cursor)
	if err != nil {
		t.Fatal(err)
	}
	got := map[string]v1.FileChange_Kind{}
	for _, ch := range changes {
		got[ch.FileId] = ch.Kind
	}
	want := map[string]v1.FileChange_Kind{a.FileId: v1.FileChange_KIND_REVISED, b.FileId: v1.FileChange_KIND_DELETED, d.FileId: v1.FileChange_KIND_CREATED}
	if fmt.Sprint(got) != fmt.Sprint(want) {
		t.Fatalf("changes since the cursor: %v, want %v", got, want)
	}

	// Compact etcd past the cursor: the caller is told to resync.
	etcd := c.EtcdClient()
	resp, _ := etcd.Get(ctx, "x")
	if _, err := etcd.Compact(ctx, resp.Header.Revision); err != nil {
		t.Fatal(err)
	}
	_, _, err = cl.Sync(ctx, cursor)
	if st := status.Convert(err); st.Code() != codes.OutOfRange || !strings.Contains(st.Message(), "resync") {
		t.Fatalf("sync from a compacted cursor: %v", err)
	}
	if _, _, err := cl.Sync(ctx, "not-a-cursor"); status.Code(err) != codes.InvalidArgument {
		t.Fatalf("a bad cursor: %v", err)
	}
}

// A byte flipped in a shard on disk: the read still returns the right
// bytes, and the shard is rebuilt.
func TestCorruptShardIsReadAroundAndRepaired(t *testing.T) {
	c := cluster.New(t, cluster.Options{Workers: 3})
	cl := c.Client(0)
	ctx := ctxTimeout(t, time.Minute)
	data := randomBytes(3 * block)
	info, err := cl.Push(ctx, "f", data)
	if err != nil {
		t.Fatal(err)
	}
	// One byte in every shard worker_001 holds: some are data shards that
	// reads use, some parity that only the scrubber sees.
	corrupted := map[string][]byte{}
	for _, path := range shardFiles(t, filepath.Join(c.Dir(), "workers", "worker_001")) {
		raw, err := os.ReadFile(path)
		if err != nil {
			t.Fatal(err)
		}
		raw[len(raw)/2] ^= 0xff
		if err := os.WriteFile(path, raw, 0o600); err != nil {
			t.Fatal(err)
		}
		corrupted[path] = raw
	}
	if len(corrupted) == 0 {
		t.Fatal("worker_001 holds no shards")
	}
	for range 3 {
		got, err := cl.Get(ctx, info.FileId)
		if err != nil || !bytes.Equal(got, data) {
			t.Fatalf("read with corrupt shards: %d bytes, %v", len(got), err)
		}
	}
	waitFor(t, 30*time.Second, "the corrupt shards repaired", func() bool {
		for path, raw := range corrupted {
			if fixed, _ := os.ReadFile(path); bytes.Equal(fixed, raw) {
				return false
			}
		}
		st, err := cl.Stat(ctx, info.FileId, 0)
		return err == nil && st.Redundancy == v1.Redundancy_REDUNDANCY_FULL
	})
}

// shardFiles returns the shard files under a worker's directory.
func shardFiles(t *testing.T, dir string) []string {
	var out []string
	filepath.Walk(filepath.Join(dir, "shards"), func(p string, fi os.FileInfo, err error) error {
		if err == nil && fi.Mode().IsRegular() && !strings.HasPrefix(fi.Name(), ".") && fi.Size() > 1024 {
			out = append(out, p)
		}
		return nil
	})
	return out
}

func waitFor(t *testing.T, d time.Duration, what string, cond func() bool) {
	t.Helper()
	deadline := time.Now().Add(d)
	for !cond() {
		if time.Now().After(deadline) {
			t.Fatalf("after %s, still not %s", d, what)
		}
		time.Sleep(50 * time.Millisecond)
	}
}

// Workers lost two at a time: every file stays readable, and repair brings
// it back to full redundancy before the next loss.
func TestRepairAfterWorkerLoss(t *testing.T) {
	c := cluster.New(t, cluster.Options{Workers: 8})
	cl := c.Client(0)
	ctx := ctxTimeout(t, 2*time.Minute)
	stored := map[string][]byte{}
	for i := range 20 {
		data := randomBytes(mrand.IntN(4 * block))
		info, err := cl.Push(ctx, fmt.Sprint(i), data)
		if err != nil {
			t.Fatal(err)
		}
		stored[info.FileId] = data
	}
	status := func() *v1.StatusResponse {
		st, err := v1.NewAdminServiceClient(cl.Conn()).Status(ctx, &v1.StatusRequest{})
		if err != nil {
			t.Fatal(err)
		}
		return st
	}
	readAll := func(when string) {
		for id, data := range stored {
			got, err := cl.Get(ctx, id)
			if err != nil || !bytes.Equal(got, data) {
				t.Fatalf("%s: file %s: %d bytes, %v", when, id, len(got), err)
			}
		}
	}
	c.KillWorker(1)
	c.KillWorker(4)
	readAll("two workers lost")
	// Until the pool has seen the two leases expire it counts their shards
	// as there; then the files are reduced until repair brings them back.
	// (Status counts the workers after it rates the files, so one answer
	// can say six workers and rate the files by eight: a rebuilt shard is
	// what says the repair has run.)
	waitFor(t, time.Minute, "every file at full redundancy", func() bool {
		st := status()
		return st.Workers == 6 && st.ShardsRebuilt > 0 && st.RepairsPending == 0 && st.FilesFull == int64(len(stored)) && st.FilesReduced == 0 && st.FilesLost == 0
	})
	t.Logf("after repair: %+v", status())
	// Two more: four workers are left, too few for 4+2 everywhere, but
	// every block still has its four data shards' worth.
	c.KillWorker(2)
	c.KillWorker(6)
	readAll("four workers lost")
	if st := status(); st.FilesLost != 0 {
		t.Fatalf("files lost: %+v", st)
	}
}

// failingWriter takes n bytes, then fails.
type failingWriter struct{ n int }

var errWriterFull = errors.New("the writer is full")

func (w *failingWriter) Write(p []byte) (int, error) {
	if len(p) > w.n {
		k := w.n
		w.n = 0
		return k, errWriterFull
	}
	w.n -= len(p)
	return len(p), nil
}

// A download hands each chunk's bytes to the writer as it decodes them:
// the file comes back whole with its description, and a writer that fails
// ends the download with its own error, not the stream's.
func TestDownloadWritesToTheWriter(t *testing.T) {
	c := cluster.New(t, cluster.Options{Workers: 3})
	ctx := ctxTimeout(t, time.Minute)
	cl := c.Client(0)
	data := make([]byte, 3<<20+11)
	for i := range data {
		data[i] = byte(i * 7)
	}
	info, err := cl.Upload(ctx, "big", bytes.NewReader(data))
	if err != nil {
		t.Fatal(err)
	}
	var buf bytes.Buffer
	got, err := cl.Download(ctx, info.FileId, 0, &buf)
	if err != nil || !bytes.Equal(buf.Bytes(), data) {
		t.Fatalf("download: %d bytes, %v", buf.Len(), err)
	}
	if got.GetSha256() != info.Sha256 || got.GetSize() != int64(len(data)) || got.GetVersion() != 1 {
		t.Errorf("download described the file as %v; the upload as %v", got, info)
	}
	_, err = cl.Download(ctx, info.FileId, 0, &failingWriter{n: 1 << 20})
	if !errors.Is(err, errWriterFull) {
		t.Errorf("a download into a writer that fails after 1 MiB: %v; want the writer's error", err)
	}
}
