package shardserver_test

import (
	"bytes"
	"context"
	"fmt"
	"slices"
	"strings"
	"testing"
	"time"

	"google.golang.org/grpc/codes"
	"google.golang.org/grpc/status"

	v1 "github.com/hivemind/taskworker/api/taskworker/v1"
	"github.com/hivemind/taskworker/internal/shardserver"
	"github.com/hivemind/taskworker/internal/shardstore"
)

// wantCode fails unless err is a status with code want whose message contains every one of words.
func wantCode(t *testing.T, err error, want codes.Code, words ...string) {
	t.Helper()
	st, _ := status.FromError(err)
	if st.Code() != want {
		t.Fatalf("got %v (%v), want code %v", st.Code(), err, want)
	}
	for _, w := range words {
		if !strings.Contains(st.Message(), w) {
			t.Errorf("message %q does not say %q", st.Message(), w)
		}
	}
}

func TestPutGetRoundTrip(t *testing.T) {
	t.Parallel()
	h := newHarness(t, shardserver.Options{})
	for i, tc := range []struct {
		name  string
		size  int
		chunk int
	}{
		{"empty", 0, 1 << 20},
		{"one byte", 1, 1 << 20},
		{"1MiB+1", 1<<20 + 1, 1 << 20},
		{"5MiB in odd chunks", 5<<20 + 333, 700 << 10},
		{"tiny chunks", 10_000, 7},
	} {
		t.Run(tc.name, func(t *testing.T) {
			ctx := context.Background()
			k := key("f1", "w1", int64(i), 2)
			data := payload(uint64(i), tc.size)
			size, err := h.put(ctx, k, data, tc.chunk)
			if err != nil {
				t.Fatal(err)
			}
			if size != int64(tc.size) {
				t.Errorf("put acknowledged %d bytes, sent %d", size, tc.size)
			}
			got, sizes, err := h.get(ctx, shardserver.KeyToProto(k))
			if err != nil {
				t.Fatal(err)
			}
			if !bytes.Equal(got, data) {
				t.Fatalf("got %d bytes back, not the %d put", len(got), len(data))
			}
			for _, n := range sizes {
				if n > 1<<20 || n == 0 {
					t.Errorf("a GetShard message carried %d bytes; want 1 to 1 MiB", n)
				}
			}
		})
	}
}

func TestPutReplaces(t *testing.T) {
	t.Parallel()
	h := newHarness(t, shardserver.Options{})
	k := key("f1", "w1", 0, 0)
	h.mustPut(t, k, []byte("old"))
	h.mustPut(t, k, []byte("new bytes"))
	got, _, err := h.get(context.Background(), shardserver.KeyToProto(k))
	if err != nil || string(got) != "new bytes" {
		t.Fatalf("got %q, %v; want the second put's bytes", got, err)
	}
}

func TestPutRejects(t *testing.T) {
	t.Parallel()
	const max = 1000
	h := newHarness(t, shardserver.Options{MaxShardSize: max})
	good := key("f1", "w1", 0, 0)
	data := func(b []byte) *v1.PutShardRequest {
		return &v1.PutShardRequest{Part: &v1.PutShardRequest_Data{Data: b}}
	}
	for _, tc := range []struct {
		name  string
		msgs  []*v1.PutShardRequest
		code  codes.Code
		words []string
	}{
		{"no messages", nil, codes.InvalidArgument, []string{"key first"}},
		{"data before the key", []*v1.PutShardRequest{data([]byte("x")), keyMsg(good)}, codes.InvalidArgument, []string{"first message must be the shard's key"}},
		{"path traversal in the file ID", []*v1.PutShardRequest{keyMsg(key("../x", "w1", 0, 0)), data([]byte("x"))}, codes.InvalidArgument, []string{"file ID", "A-Z"}},
		{"slash in the write ID", []*v1.PutShardRequest{keyMsg(key("f1", "a/b", 0, 0))}, codes.InvalidArgument, []string{"write ID"}},
		{"empty file ID", []*v1.PutShardRequest{keyMsg(key("", "w1", 0, 0))}, codes.InvalidArgument, []string{"file ID"}},
		{"negative block", []*v1.PutShardRequest{keyMsg(key("f1", "w1", -1, 0))}, codes.InvalidArgument, []string{"block"}},
		{"shard out of range", []*v1.PutShardRequest{keyMsg(key("f1", "w1", 0, 256))}, codes.InvalidArgument, []string{"shard 256"}},
		{"second key", []*v1.PutShardRequest{keyMsg(good), data([]byte("x")), keyMsg(good)}, codes.InvalidArgument, []string{"second key"}},
		{"one byte over the limit", append([]*v1.PutShardRequest{keyMsg(good)}, dataMsgs(payload(1, max+1), 300)...), codes.ResourceExhausted, []string{"1000 bytes"}},
		{"far over the limit", append([]*v1.PutShardRequest{keyMsg(good)}, dataMsgs(payload(1, 1<<20), 64<<10)...), codes.ResourceExhausted, []string{"larger than this worker accepts"}},
	} {
		t.Run(tc.name, func(t *testing.T) {
			_, err := putMessages(context.Background(), h.client, tc.msgs...)
			wantCode(t, err, tc.code, tc.words...)
		})
	}
	if got := h.listAll(t); len(got) != 0 {
		t.Errorf("rejected puts left shards: %v", got)
	}
	// At the limit is fine.
	if _, err := h.put(context.Background(), good, payload(2, max), 300); err != nil {
		t.Errorf("put of exactly MaxShardSize: %v", err)
	}
}

// A PutShard whose caller goes away mid-stream leaves no shard and no temp file, and does not disturb the
// shard it would have replaced.
func TestPutInterrupted(t *testing.T) {
	t.Parallel()
	for _, tc := range []struct {
		name  string
		old   []byte // the shard already there, if any
		close bool   // close the connection instead of canceling the call
	}{
		{"cancel, new shard", nil, false},
		{"cancel, replacing a shard", []byte("the old version"), false},
		{"disconnect, new shard", nil, true},
	} {
		t.Run(tc.name, func(t *testing.T) {
			t.Parallel()
			h := newHarness(t, shardserver.Options{})
			k := key("f1", "w1", 3, 1)
			if tc.old != nil {
				h.mustPut(t, k, tc.old)
			}
			conn := dial(t, h.addr, testCallKey)
			ctx, cancel := context.WithCancel(context.Background())
			defer cancel()
			stream, err := v1.NewShardServiceClient(conn).PutShard(ctx)
			if err != nil {
				t.Fatal(err)
			}
			for _, m := range append([]*v1.PutShardRequest{keyMsg(k)}, dataMsgs(payload(3, 256<<10), 64<<10)...) {
				if err := stream.Send(m); err != nil {
					t.Fatal(err)
				}
			}
			// Wait until the server is writing the shard, so the interruption is mid-Put.
			eventually(t, "the server starts writing", func() (bool, error) {
				u, err := h.store.Usage(context.Background())
				return u.TempFiles == 1, err
			})
			if tc.close {
				conn.Close()
			} else {
				cancel()
			}
			eventually(t, "the temp file is removed", func() (bool, error) {
				u, err := h.store.Usage(context.Background())
				return u.TempFiles == 0, err
			})
			got, _, err := h.get(context.Background(), shardserver.KeyToProto(k))
			if tc.old == nil {
				wantCode(t, err, codes.NotFound)
				return
			}
			if err != nil || !bytes.Equal(got, tc.old) {
				t.Errorf("after an interrupted put the shard reads %q, %v; want the old version %q", got, err, tc.old)
			}
		})
	}
}

func TestGetErrors(t *testing.T) {
	t.Parallel()
	h := newHarness(t, shardserver.Options{})
	h.damaged = true
	bad := key("f1", "w1", 0, 1)
	h.mustPut(t, bad, payload(4, 4096))
	corrupt(t, h.dir, bad)
	for _, tc := range []struct {
		name  string
		key   *v1.ShardKey
		code  codes.Code
		words []string
	}{
		{"missing", shardserver.KeyToProto(key("f1", "w1", 0, 0)), codes.NotFound, []string{"f1/w1/0.0", "not on this worker"}},
		{"missing file", shardserver.KeyToProto(key("nope", "w1", 0, 0)), codes.NotFound, nil},
		{"corrupt", shardserver.KeyToProto(bad), codes.DataLoss, []string{"f1/w1/0.1", "corrupt", "repaired"}},
		{"path traversal", &v1.ShardKey{FileId: "..", WriteId: "w1"}, codes.InvalidArgument, []string{"file ID"}},
		{"no key", nil, codes.InvalidArgument, []string{"no shard key"}},
	} {
		t.Run(tc.name, func(t *testing.T) {
			_, _, err := h.get(context.Background(), tc.key)
			wantCode(t, err, tc.code, tc.words...)
		})
	}
}

func TestDeleteShards(t *testing.T) {
	t.Parallel()
	h := newHarness(t, shardserver.Options{MaxDeleteKeys: 4})
	ctx := context.Background()
	for _, k := range []shardstore.Key{
		key("f1", "w1", 0, 0), key("f1", "w1", 0, 1), key("f1", "w1", 1, 0),
		key("f1", "w2", 0, 0), key("f1", "w2", 0, 1),
		key("f2", "w1", 0, 0),
	} {
		h.mustPut(t, k, []byte(k.String()))
	}
	ref := func(file, write string) *v1.WriteRef { return &v1.WriteRef{FileId: file, WriteId: write} }
	for _, tc := range []struct {
		name    string
		req     *v1.DeleteShardsRequest
		deleted int64
		code    codes.Code
		left    []string // shards left afterwards
	}{
		{"invalid key deletes nothing",
			&v1.DeleteShardsRequest{Keys: []*v1.ShardKey{shardserver.KeyToProto(key("f1", "w2", 0, 0)), {FileId: "../f1", WriteId: "w1"}}},
			0, codes.InvalidArgument, []string{"f1/w1/0.0", "f1/w1/0.1", "f1/w1/1.0", "f1/w2/0.0", "f1/w2/0.1", "f2/w1/0.0"}},
		{"invalid write deletes nothing",
			&v1.DeleteShardsRequest{Writes: []*v1.WriteRef{ref("f1", "w1"), ref("f1", "")}},
			0, codes.InvalidArgument, []string{"f1/w1/0.0", "f1/w1/0.1", "f1/w1/1.0", "f1/w2/0.0", "f1/w2/0.1", "f2/w1/0.0"}},
		{"too many",
			&v1.DeleteShardsRequest{Keys: make([]*v1.ShardKey, 3), Writes: make([]*v1.WriteRef, 2)},
			0, codes.InvalidArgument, []string{"f1/w1/0.0", "f1/w1/0.1", "f1/w1/1.0", "f1/w2/0.0", "f1/w2/0.1", "f2/w1/0.0"}},
		{"by key, one missing",
			&v1.DeleteShardsRequest{Keys: []*v1.ShardKey{shardserver.KeyToProto(key("f1", "w2", 0, 0)), shardserver.KeyToProto(key("f1", "w2", 9, 9))}},
			1, codes.OK, []string{"f1/w1/0.0", "f1/w1/0.1", "f1/w1/1.0", "f1/w2/0.1", "f2/w1/0.0"}},
		{"by write, and a write not here",
			&v1.DeleteShardsRequest{Writes: []*v1.WriteRef{ref("f1", "w1"), ref("f3", "w1")}},
			3, codes.OK, []string{"f1/w2/0.1", "f2/w1/0.0"}},
		{"a key and its write counted once",
			&v1.DeleteShardsRequest{Keys: []*v1.ShardKey{shardserver.KeyToProto(key("f1", "w2", 0, 1))}, Writes: []*v1.WriteRef{ref("f1", "w2")}},
			1, codes.OK, []string{"f2/w1/0.0"}},
		{"again: nothing to delete",
			&v1.DeleteShardsRequest{Keys: []*v1.ShardKey{shardserver.KeyToProto(key("f1", "w2", 0, 1))}, Writes: []*v1.WriteRef{ref("f1", "w2")}},
			0, codes.OK, []string{"f2/w1/0.0"}},
	} {
		t.Run(tc.name, func(t *testing.T) {
			resp, err := h.client.DeleteShards(ctx, tc.req)
			wantCode(t, err, tc.code)
			if resp.GetDeleted() != tc.deleted {
				t.Errorf("deleted %d, want %d", resp.GetDeleted(), tc.deleted)
			}
			var left []string
			for k, err := range h.store.List(ctx, "") {
				if err != nil {
					t.Fatal(err)
				}
				left = append(left, k.String())
			}
			slices.Sort(left) // List's order follows the store's hashed fan-out directories
			if !slices.Equal(left, tc.left) {
				t.Errorf("left %v, want %v", left, tc.left)
			}
		})
	}
}

func TestListShards(t *testing.T) {
	t.Parallel()
	h := newHarness(t, shardserver.Options{})
	if got := h.listAll(t); len(got) != 0 {
		t.Fatalf("an empty store lists %v", got)
	}
	before := time.Now().Add(-time.Second).UnixMilli() // file times may lag the clock a little
	want := map[string][]string{
		"f1/w1": {"f1/w1/0.0", "f1/w1/0.5", "f1/w1/1.0"},
		"f1/w2": {"f1/w2/7.3"},
		"f2/w1": {"f2/w1/0.0", "f2/w1/2.1"},
	}
	for _, keys := range want {
		for _, s := range keys {
			k := parseKey(t, s)
			h.mustPut(t, k, []byte(s))
		}
	}
	after := time.Now().Add(time.Second).UnixMilli()

	got := map[string][]string{}
	for _, m := range h.listAll(t) {
		w := m.GetWrite().GetFileId() + "/" + m.GetWrite().GetWriteId()
		if _, dup := got[w]; dup {
			t.Errorf("write %s listed twice", w)
		}
		for _, pk := range m.GetShards() {
			k, err := shardserver.KeyFromProto(pk)
			if err != nil {
				t.Fatal(err)
			}
			if k.FileID+"/"+k.WriteID != w {
				t.Errorf("shard %s listed under write %s", k, w)
			}
			got[w] = append(got[w], k.String())
		}
		if m.GetNewestMs() < before || m.GetNewestMs() > after {
			t.Errorf("write %s: newest_ms %d not within the test's [%d, %d]", w, m.GetNewestMs(), before, after)
		}
	}
	for w := range want {
		slices.Sort(got[w])
		if !slices.Equal(got[w], want[w]) {
			t.Errorf("write %s lists %v, want %v", w, got[w], want[w])
		}
	}
	if len(got) != len(want) {
		t.Errorf("listed writes %v, want %v", got, want)
	}
}

func parseKey(t *testing.T, s string) shardstore.Key {
	t.Helper()
	var k shardstore.Key
	parts := strings.Split(s, "/")
	k.FileID, k.WriteID = parts[0], parts[1]
	var block, shard int
	if _, err := fmt.Sscanf(parts[2], "%d.%d", &block, &shard); err != nil {
		t.Fatal(err)
	}
	k.Block, k.Shard = int64(block), shard
	return k
}

func TestUsage(t *testing.T) {
	t.Parallel()
	h := newHarness(t, shardserver.Options{})
	h.mustPut(t, key("f1", "w1", 0, 0), payload(5, 1000))
	h.mustPut(t, key("f1", "w1", 0, 1), payload(6, 2000))
	u, err := h.client.Usage(context.Background(), &v1.UsageRequest{})
	if err != nil {
		t.Fatal(err)
	}
	if u.GetShards() != 2 || u.GetBytes() < 3000 || u.GetFreeBytes() <= 0 {
		t.Errorf("usage %v; want 2 shards, at least 3000 bytes, some free space", u)
	}
}

func TestOptionsValidate(t *testing.T) {
	for _, tc := range []struct {
		opts  shardserver.Options
		words string
	}{
		{shardserver.Options{}, ""},
		{shardserver.DefaultOptions(), ""},
		{shardserver.Options{MaxShardSize: -1}, "MaxShardSize (-1)"},
		{shardserver.Options{MaxDeleteKeys: -5}, "MaxDeleteKeys (-5)"},
	} {
		err := tc.opts.Validate()
		if (err == nil) != (tc.words == "") || err != nil && !strings.Contains(err.Error(), tc.words) {
			t.Errorf("%+v: Validate() = %v, want an error saying %q", tc.opts, err, tc.words)
		}
	}
}
