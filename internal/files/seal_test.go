package files_test

import (
	"bytes"
	"context"
	"encoding/base64"
	"encoding/json"
	"io/fs"
	"os"
	"path/filepath"
	"strings"
	"testing"
	"time"

	clientv3 "go.etcd.io/etcd/client/v3"
	"google.golang.org/grpc/codes"
	"google.golang.org/grpc/status"

	v1 "github.com/hivemind/taskworker/api/taskworker/v1"
	"github.com/hivemind/taskworker/internal/cluster"
)

// marker is what the sealed files contain, many times over.
const marker = "MARKER-7f3a9c-what-a-worker-must-never-see"

// markerFile returns n bytes of marker, repeated.
func markerFile(n int) []byte {
	return bytes.Repeat([]byte(marker), n/len(marker)+1)[:n]
}

// markerForms are the byte strings whose presence would show the marker:
// itself, and its base64 at each of the three alignments (etcd values are
// JSON, where bytes would be base64), without the edge characters that
// depend on the neighbours.
func markerForms() [][]byte {
	forms := [][]byte{[]byte(marker)}
	for pad := range 3 {
		enc := base64.StdEncoding.EncodeToString(append(bytes.Repeat([]byte{0}, pad), marker...))
		forms = append(forms, []byte(enc[4:len(enc)-4]))
	}
	return forms
}

// findMarker walks dir and returns the files holding any marker form.
func findMarker(t *testing.T, dir string) []string {
	t.Helper()
	var found []string
	err := filepath.WalkDir(dir, func(p string, d fs.DirEntry, err error) error {
		if err != nil {
			if os.IsNotExist(err) {
				return nil // removed while walked (a temporary file)
			}
			return err
		}
		if !d.Type().IsRegular() {
			return nil
		}
		b, err := os.ReadFile(p)
		if os.IsNotExist(err) {
			return nil
		}
		if err != nil {
			return err
		}
		for _, f := range markerForms() {
			if bytes.Contains(b, f) {
				found = append(found, p)
				break
			}
		}
		return nil
	})
	if err != nil {
		t.Fatal(err)
	}
	return found
}

// Workers and etcd hold only ciphertext: a marker pushed in a large file
// (shards on six workers) and in a small one (inline in etcd) is nowhere
// in the workers' data directories, etcd's, or the pool's, though Get
// returns it. After a master key rotation, RewrapKeys and the retirement
// of the old master key, every version still reads, also from a pool
// started again from the key file.
func TestWorkersAndEtcdHoldOnlyCiphertext(t *testing.T) {
	c := cluster.New(t, cluster.Options{Workers: 6})
	cl := c.Client(0)
	ctx := ctxTimeout(t, 2*time.Minute)

	// The control first: the walk does find the marker where it is.
	control := t.TempDir()
	if err := os.WriteFile(filepath.Join(control, "plain"), []byte("{\"inline\":\""+base64.StdEncoding.EncodeToString(markerFile(100))+"\"}"), 0o600); err != nil {
		t.Fatal(err)
	}
	if got := findMarker(t, control); len(got) != 1 {
		t.Fatalf("the walk finds the marker's base64 in %v, want the control file", got)
	}

	large := markerFile(5*block + 1234) // six blocks of shards at 4+2
	small := markerFile(3000)           // inline
	want := map[string][]byte{}
	infoL, err := cl.Push(ctx, "large.txt", large)
	if err != nil {
		t.Fatal(err)
	}
	if infoL.Layout != "4+2" || infoL.Size != int64(len(large)) {
		t.Fatalf("large file: %v", infoL)
	}
	want[infoL.FileId] = large
	infoS, err := cl.Push(ctx, "small.txt", small)
	if err != nil {
		t.Fatal(err)
	}
	if infoS.Layout != "inline" || infoS.Size != int64(len(small)) {
		t.Fatalf("small file: %v", infoS)
	}
	want[infoS.FileId] = small
	// A revision is a new write with a new data key.
	revised := markerFile(2*block + 7)
	if _, err := cl.Revise(ctx, infoL.FileId, revised, 1); err != nil {
		t.Fatal(err)
	}

	readAll := func(when string) {
		t.Helper()
		cl := c.Client(0)
		for id, data := range want {
			var buf bytes.Buffer
			if _, err := cl.Download(ctx, id, 1, &buf); err != nil || !bytes.Equal(buf.Bytes(), data) {
				t.Fatalf("%s: version 1 of %s: %d bytes, %v", when, id, buf.Len(), err)
			}
		}
		got, err := cl.Get(ctx, infoL.FileId)
		if err != nil || !bytes.Equal(got, revised) {
			t.Fatalf("%s: version 2: %d bytes, %v", when, len(got), err)
		}
		// A range across a block's edge, and one across two blocks.
		for _, r := range [][2]int64{{block - 10, 20}, {block / 2, block + 100}} {
			var buf bytes.Buffer
			if _, err := cl.DownloadRange(ctx, infoL.FileId, 1, r[0], r[1], &buf); err != nil || !bytes.Equal(buf.Bytes(), large[r[0]:r[0]+r[1]]) {
				t.Fatalf("%s: %d bytes at %d: %v", when, r[1], r[0], err)
			}
		}
	}
	readAll("after writing")
	if err := c.Pools[0].Files().Verify(ctx); err != nil {
		t.Fatal(err)
	}

	if found := findMarker(t, c.Dir()); len(found) > 0 {
		t.Fatalf("the marker is in plaintext in %v", found)
	}
	// The shards are there (the walk looked at something).
	shards := 0
	_ = filepath.WalkDir(filepath.Join(c.Dir(), "workers"), func(p string, d fs.DirEntry, err error) error {
		if err == nil && d.Type().IsRegular() {
			shards++
		}
		return nil
	})
	if shards < 6*6 {
		t.Fatalf("%d files in the workers' data directories, want the shards of six blocks at least", shards)
	}

	// Rotate as `taskworker keys rotate` does (KeyService), which also
	// records the new master key for replicas started later.
	ring := c.Pools[0].Keyring()
	old := ring.Current()
	rot, err := v1.NewKeyServiceClient(c.Client(0).Conn()).RotateKeys(ctx, &v1.RotateKeysRequest{})
	if err != nil {
		t.Fatal(err)
	}
	for _, r := range rot.Rewrapped {
		if r.Store == "files" && (r.Keys != 3 || r.Error != "") {
			t.Fatalf("the rotation rewrapped %d keys of files (%s); want 3 (three versions)", r.Keys, r.Error)
		}
	}
	if n, err := c.Pools[0].Files().RewrapKeys(ctx); err != nil || n != 0 {
		t.Fatalf("a second RewrapKeys rewrapped %d keys, %v; want 0", n, err)
	}
	if err := ring.Retire(old); err != nil {
		t.Fatal(err)
	}
	readAll("after the rotation")
	c.KillPool(0)
	c.StartPool(0)
	c.WaitWorkers(6)
	readAll("after a restart of the pool")
}

// manifestKey returns the etcd key of version 1 of a file's manifest.
func manifestKey(t *testing.T, etcd *clientv3.Client, fileID string) (string, map[string]any) {
	t.Helper()
	resp, err := etcd.Get(context.Background(), "", clientv3.WithFromKey())
	if err != nil {
		t.Fatal(err)
	}
	for _, kv := range resp.Kvs {
		if strings.HasSuffix(string(kv.Key), "manifests/"+fileID+"/00000000000000000001") {
			var m map[string]any
			if err := json.Unmarshal(kv.Value, &m); err != nil {
				t.Fatal(err)
			}
			return string(kv.Key), m
		}
	}
	t.Fatalf("no manifest of %s", fileID)
	return "", nil
}

func putManifest(t *testing.T, etcd *clientv3.Client, key string, m map[string]any) {
	t.Helper()
	b, _ := json.Marshal(m)
	if _, err := etcd.Put(context.Background(), key, string(b)); err != nil {
		t.Fatal(err)
	}
}

// A wrapped data key opens only for the file and write it was made for:
// copied onto another file's manifest, the file does not read (DataLoss).
// A manifest from before
// sealing (no key, plaintext inline bytes) still reads.
func TestADataKeyOpensOnlyItsOwnWrite(t *testing.T) {
	c := cluster.New(t, cluster.Options{Workers: 3})
	cl := c.Client(0)
	ctx := ctxTimeout(t, time.Minute)
	etcd := c.EtcdClient()

	a, err := cl.Push(ctx, "a", markerFile(2*block))
	if err != nil {
		t.Fatal(err)
	}
	b, err := cl.Push(ctx, "b", markerFile(2*block))
	if err != nil {
		t.Fatal(err)
	}
	_, ma := manifestKey(t, etcd, a.FileId)
	kb, mb := manifestKey(t, etcd, b.FileId)
	mb["key"] = ma["key"]
	putManifest(t, etcd, kb, mb)
	if _, err := cl.Get(ctx, b.FileId); status.Code(err) != codes.DataLoss {
		t.Fatalf("Get with another file's data key: %v, want DataLoss", err)
	}

	small, err := cl.Push(ctx, "small", []byte("before sealing"))
	if err != nil {
		t.Fatal(err)
	}
	ks, ms := manifestKey(t, etcd, small.FileId)
	if inline, _ := base64.StdEncoding.DecodeString(ms["inline"].(string)); bytes.Contains(inline, []byte("before sealing")) {
		t.Fatal("the inline bytes are plaintext")
	}
	delete(ms, "key")
	ms["inline"] = base64.StdEncoding.EncodeToString([]byte("before sealing"))
	putManifest(t, etcd, ks, ms)
	if got, err := cl.Get(ctx, small.FileId); err != nil || string(got) != "before sealing" {
		t.Fatalf("a manifest from before sealing: %q, %v", got, err)
	}
}
