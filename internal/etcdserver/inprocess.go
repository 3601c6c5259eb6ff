package etcdserver

import (
	"context"
	"sync"

	pb "go.etcd.io/etcd/api/v3/etcdserverpb"
	"go.etcd.io/etcd/api/v3/v3rpc/rpctypes"
	clientv3 "go.etcd.io/etcd/client/v3"
	"go.etcd.io/etcd/server/v3/etcdserver/api/v3client"
	"go.etcd.io/etcd/server/v3/etcdserver/api/v3rpc"
	"go.etcd.io/etcd/server/v3/proxy/grpcproxy/adapter"
	"google.golang.org/grpc"
)

// Client returns a client of this etcd that calls it in this process,
// through the same request handlers as its gRPC service (the checks of a
// request's size and operations, the storage quota), without the network:
// no TLS, no HTTP/2, no encoding of requests and answers. A pool that embeds
// etcd uses it (RATIONALE.md, "Why does the pool call its embedded etcd in
// process?").
//
// Two things etcd's gRPC service did around its handlers, the client does
// itself for its reads and writes (the KV calls): a call whose context ends
// fails with the context's error, as a network client's would; and once
// Close begins, calls are refused with rpctypes.ErrStopped and Close waits
// for those running, since a read that reached etcd's store after it closed
// would crash the process. Closing the client leaves etcd running.
func (s *Server) Client() *clientv3.Client {
	c := v3client.New(s.etcd.Server)
	kv := adapter.KvServerToKvClient(v3rpc.NewQuotaKVServer(s.etcd.Server))
	c.KV = clientv3.NewKVFromKVClient(gatedKV{kv: kv, g: &s.calls}, c)
	return c
}

// gate admits calls until it is closed; close waits for those admitted.
type gate struct {
	mu      sync.Mutex
	closed  bool
	running sync.WaitGroup
}

func (g *gate) enter() bool {
	g.mu.Lock()
	defer g.mu.Unlock()
	if g.closed {
		return false
	}
	g.running.Add(1)
	return true
}

func (g *gate) leave() { g.running.Done() }

func (g *gate) close() {
	g.mu.Lock()
	g.closed = true
	g.mu.Unlock()
	g.running.Wait()
}

// through runs one call through g: refused once g is closed, and failed
// with ctx's error when ctx ended before the answer.
func through[T any](ctx context.Context, g *gate, call func() (T, error)) (T, error) {
	if !g.enter() {
		var none T
		return none, rpctypes.ErrGRPCStopped
	}
	defer g.leave()
	r, err := call()
	if err != nil && ctx.Err() != nil {
		return r, ctx.Err()
	}
	return r, err
}

// gatedKV is an in-process KV client whose calls go through a gate.
type gatedKV struct {
	kv pb.KVClient
	g  *gate
}

func (k gatedKV) Range(ctx context.Context, in *pb.RangeRequest, opts ...grpc.CallOption) (*pb.RangeResponse, error) {
	return through(ctx, k.g, func() (*pb.RangeResponse, error) { return k.kv.Range(ctx, in, opts...) })
}

func (k gatedKV) Put(ctx context.Context, in *pb.PutRequest, opts ...grpc.CallOption) (*pb.PutResponse, error) {
	return through(ctx, k.g, func() (*pb.PutResponse, error) { return k.kv.Put(ctx, in, opts...) })
}

func (k gatedKV) DeleteRange(ctx context.Context, in *pb.DeleteRangeRequest, opts ...grpc.CallOption) (*pb.DeleteRangeResponse, error) {
	return through(ctx, k.g, func() (*pb.DeleteRangeResponse, error) { return k.kv.DeleteRange(ctx, in, opts...) })
}

func (k gatedKV) Txn(ctx context.Context, in *pb.TxnRequest, opts ...grpc.CallOption) (*pb.TxnResponse, error) {
	return through(ctx, k.g, func() (*pb.TxnResponse, error) { return k.kv.Txn(ctx, in, opts...) })
}

func (k gatedKV) Compact(ctx context.Context, in *pb.CompactionRequest, opts ...grpc.CallOption) (*pb.CompactionResponse, error) {
	return through(ctx, k.g, func() (*pb.CompactionResponse, error) { return k.kv.Compact(ctx, in, opts...) })
}
