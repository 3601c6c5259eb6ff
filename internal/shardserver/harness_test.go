package shardserver_test

import (
	"bytes"
	"context"
	"errors"
	"fmt"
	"io"
	"io/fs"
	"math/rand/v2"
	"net"
	"os"
	"path/filepath"
	"strings"
	"testing"
	"time"

	"google.golang.org/grpc"
	"google.golang.org/grpc/credentials/insecure"
	"google.golang.org/grpc/health"
	healthpb "google.golang.org/grpc/health/grpc_health_v1"
	"google.golang.org/grpc/metadata"

	v1 "github.com/hivemind/taskworker/api/taskworker/v1"
	"github.com/hivemind/taskworker/internal/auth"
	"github.com/hivemind/taskworker/internal/shardserver"
	"github.com/hivemind/taskworker/internal/shardstore"
)

// testCallKey stands for the pool's certificate in these tests: the worker's interceptors admit a
// caller that sends it under testHeader. The certificates themselves are tested with real workers
// (internal/worker, internal/pool).
const (
	testHeader  = "x-test-pool"
	testCallKey = "test-call-key"
)

// isTestPool is the worker interceptors' isPool for the harness.
func isTestPool(ctx context.Context) error {
	md, _ := metadata.FromIncomingContext(ctx)
	if got := md.Get(testHeader); len(got) != 1 || got[0] != testCallKey {
		return errors.New("not the test's pool")
	}
	return nil
}

// harness is a Server over a real store in a temp directory, served over TCP on 127.0.0.1 behind the
// worker's interceptors, with a client that passes them.
type harness struct {
	dir    string
	store  *shardstore.Store
	addr   string
	client v1.ShardServiceClient
	// damaged is set by tests that corrupt a shard on purpose, so cleanup does not count it against them.
	damaged bool
}

// newHarness starts a harness. At cleanup, after the server has stopped and every handler returned, it
// checks what every test must leave: no temp file (every Put finished or was cleaned up) and, unless the
// test damaged one on purpose, every shard passes verification.
func newHarness(t *testing.T, opts shardserver.Options) *harness {
	t.Helper()
	h := &harness{dir: t.TempDir()}
	store, err := shardstore.Open(shardstore.DefaultConfig(h.dir))
	if err != nil {
		t.Fatal(err)
	}
	h.store = store
	lis, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	h.addr = lis.Addr().String()
	gs := grpc.NewServer(
		grpc.WaitForHandlers(true),
		shardserver.ServerOption(),
		grpc.ChainUnaryInterceptor(auth.UnaryWorkerInterceptor(isTestPool)),
		grpc.ChainStreamInterceptor(auth.StreamWorkerInterceptor(isTestPool)),
	)
	v1.RegisterShardServiceServer(gs, shardserver.New(store, opts))
	healthpb.RegisterHealthServer(gs, health.NewServer())
	served := make(chan struct{})
	go func() {
		defer close(served)
		_ = gs.Serve(lis)
	}()
	h.client = v1.NewShardServiceClient(dial(t, h.addr, testCallKey))

	t.Cleanup(func() {
		gs.Stop() // WaitForHandlers: returns once every handler has
		<-served
		ctx := context.Background()
		if u, err := store.Usage(ctx); err != nil {
			t.Errorf("usage: %v", err)
		} else if u.TempFiles != 0 {
			t.Errorf("%d temp files left after every PutShard ended", u.TempFiles)
		}
		if !h.damaged {
			_, err := store.Scrub(ctx, shardstore.ScrubHooks{OnProblem: func(p shardstore.Problem) {
				t.Errorf("shard %s is %s after the test: %v", p.Key, p.Kind, p.Err)
			}})
			if err != nil {
				t.Errorf("scrub: %v", err)
			}
		}
		if err := store.Close(); err != nil {
			t.Errorf("closing the store: %v", err)
		}
	})
	return h
}

// dial connects to addr, presenting key under testHeader on every call (none if key is empty).
func dial(t *testing.T, addr, key string) *grpc.ClientConn {
	t.Helper()
	withKey := func(ctx context.Context) context.Context {
		if key == "" {
			return ctx
		}
		return metadata.AppendToOutgoingContext(ctx, testHeader, key)
	}
	conn, err := grpc.NewClient(addr,
		grpc.WithTransportCredentials(insecure.NewCredentials()),
		grpc.WithUnaryInterceptor(func(ctx context.Context, method string, req, reply any, cc *grpc.ClientConn, invoker grpc.UnaryInvoker, opts ...grpc.CallOption) error {
			return invoker(withKey(ctx), method, req, reply, cc, opts...)
		}),
		grpc.WithStreamInterceptor(func(ctx context.Context, desc *grpc.StreamDesc, cc *grpc.ClientConn, method string, streamer grpc.Streamer, opts ...grpc.CallOption) (grpc.ClientStream, error) {
			return streamer(withKey(ctx), desc, cc, method, opts...)
		}),
	)
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { conn.Close() })
	return conn
}

// put sends data under k in chunks of chunk bytes and returns the size the server acknowledged.
func (h *harness) put(ctx context.Context, k shardstore.Key, data []byte, chunk int) (int64, error) {
	return putMessages(ctx, h.client, append([]*v1.PutShardRequest{keyMsg(k)}, dataMsgs(data, chunk)...)...)
}

// putMessages sends msgs on one PutShard stream. A send that fails because the server has already
// answered is not the error: the answer is.
func putMessages(ctx context.Context, c v1.ShardServiceClient, msgs ...*v1.PutShardRequest) (int64, error) {
	stream, err := c.PutShard(ctx)
	if err != nil {
		return 0, err
	}
	for _, m := range msgs {
		if err := stream.Send(m); err == io.EOF {
			break
		} else if err != nil {
			return 0, err
		}
	}
	resp, err := stream.CloseAndRecv()
	if err != nil {
		return 0, err
	}
	return resp.GetSize(), nil
}

func keyMsg(k shardstore.Key) *v1.PutShardRequest {
	return &v1.PutShardRequest{Part: &v1.PutShardRequest_Key{Key: shardserver.KeyToProto(k)}}
}

func dataMsgs(data []byte, chunk int) []*v1.PutShardRequest {
	var msgs []*v1.PutShardRequest
	for off := 0; off < len(data); off += chunk {
		msgs = append(msgs, &v1.PutShardRequest{Part: &v1.PutShardRequest_Data{Data: data[off:min(off+chunk, len(data))]}})
	}
	return msgs
}

func (h *harness) mustPut(t *testing.T, k shardstore.Key, data []byte) {
	t.Helper()
	if _, err := h.put(context.Background(), k, data, 64<<10); err != nil {
		t.Fatalf("put %s: %v", k, err)
	}
}

// get reads shard k and returns its bytes and the size of each message.
func (h *harness) get(ctx context.Context, k *v1.ShardKey) ([]byte, []int, error) {
	stream, err := h.client.GetShard(ctx, &v1.GetShardRequest{Key: k})
	if err != nil {
		return nil, nil, err
	}
	var buf bytes.Buffer
	var sizes []int
	for {
		resp, err := stream.Recv()
		if err == io.EOF {
			return buf.Bytes(), sizes, nil
		}
		if err != nil {
			return nil, nil, err
		}
		sizes = append(sizes, len(resp.GetData()))
		buf.Write(resp.GetData())
	}
}

// listAll returns every ListShards message.
func (h *harness) listAll(t *testing.T) []*v1.ListShardsResponse {
	t.Helper()
	stream, err := h.client.ListShards(context.Background(), &v1.ListShardsRequest{})
	if err != nil {
		t.Fatal(err)
	}
	var out []*v1.ListShardsResponse
	for {
		resp, err := stream.Recv()
		if err == io.EOF {
			return out
		}
		if err != nil {
			t.Fatal(err)
		}
		out = append(out, resp)
	}
}

// corrupt flips a payload byte of shard k's file, behind the store's back, as bit rot would.
func corrupt(t *testing.T, dir string, k shardstore.Key) {
	t.Helper()
	var path string
	filepath.WalkDir(filepath.Join(dir, "shards"), func(p string, d fs.DirEntry, err error) error {
		if err == nil && d.Type().IsRegular() && d.Name() == fmt.Sprintf("%d.%d", k.Block, k.Shard) &&
			strings.HasSuffix(filepath.Dir(p), filepath.Join(k.FileID, k.WriteID)) {
			path = p
		}
		return nil
	})
	if path == "" {
		t.Fatalf("no file for shard %s under %s", k, dir)
	}
	b, err := os.ReadFile(path)
	if err != nil {
		t.Fatal(err)
	}
	b[len(b)/2] ^= 0x40 // the middle of a shard of more than ~100 bytes is payload
	if err := os.WriteFile(path, b, 0o644); err != nil {
		t.Fatal(err)
	}
}

func payload(seed uint64, n int) []byte {
	b := make([]byte, n)
	rng := rand.New(rand.NewPCG(seed, uint64(n)))
	for i := range b {
		b[i] = byte(rng.Uint32())
	}
	return b
}

func key(file, write string, block int64, shard int) shardstore.Key {
	return shardstore.Key{FileID: file, WriteID: write, Block: block, Shard: shard}
}

// eventually polls cond every few milliseconds for up to 5 s.
func eventually(t *testing.T, what string, cond func() (bool, error)) {
	t.Helper()
	deadline := time.Now().Add(5 * time.Second)
	for {
		ok, err := cond()
		if err != nil {
			t.Fatalf("%s: %v", what, err)
		}
		if ok {
			return
		}
		if time.Now().After(deadline) {
			t.Fatalf("%s: not within 5s", what)
		}
		time.Sleep(5 * time.Millisecond)
	}
}
