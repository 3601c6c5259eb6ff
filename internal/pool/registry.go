package pool

import (
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"log/slog"
	"maps"
	"net"
	"slices"
	"strings"
	"sync"
	"sync/atomic"
	"time"

	"go.etcd.io/etcd/api/v3/v3rpc/rpctypes"
	clientv3 "go.etcd.io/etcd/client/v3"
	"google.golang.org/grpc"
	"google.golang.org/grpc/codes"
	"google.golang.org/grpc/credentials"
	"google.golang.org/grpc/peer"
	"google.golang.org/grpc/status"
	"google.golang.org/protobuf/proto"

	v1 "github.com/hivemind/taskworker/api/taskworker/v1"
	"github.com/hivemind/taskworker/internal/etcdwatch"
	"github.com/hivemind/taskworker/internal/liveness"
	"github.com/hivemind/taskworker/internal/names"
	"github.com/hivemind/taskworker/internal/placement"
	"github.com/hivemind/taskworker/internal/rawio"
	"github.com/hivemind/taskworker/internal/serving"
)

// workerRecord is what etcd holds under workers/<id>, attached to the
// worker's lease: its public description. Nothing secret: the pool and the
// worker prove who they are with certificates.
type workerRecord struct {
	Info []byte `json:"info"` // a proto-encoded v1.WorkerInfo
}

func encodeRecord(info *v1.WorkerInfo) (string, error) {
	b, err := proto.Marshal(info)
	if err != nil {
		return "", err
	}
	rec, err := json.Marshal(workerRecord{Info: b})
	return string(rec), err
}

func decodeRecord(b []byte) (*v1.WorkerInfo, error) {
	var rec workerRecord
	if err := json.Unmarshal(b, &rec); err != nil {
		return nil, err
	}
	info := &v1.WorkerInfo{}
	if err := proto.Unmarshal(rec.Info, info); err != nil {
		return nil, err
	}
	return info, nil
}

// worker is one live worker as this pool sees it, with the connection the
// pool calls it on.
type worker struct {
	id      string
	address string
	conn    *grpc.ClientConn
	mux     *callMux

	info atomic.Pointer[v1.WorkerInfo]
	// outstanding counts this pool's calls to the worker that have not
	// returned: the load that power of two choices compares.
	outstanding atomic.Int64
	// dropped is set when the worker's certificate is revoked: its calls
	// are cut off at once instead of drained.
	dropped atomic.Bool
	// suspectUntil (unix nanoseconds) marks a worker whose connection just
	// failed; it is avoided until then, or until the registry drops it.
	suspectUntil atomic.Int64

	// tasks holds the task attempts running on the worker through this
	// replica, for a drain to hand back.
	taskMu sync.Mutex
	tasks  map[*taskCall]bool
}

func (w *worker) suspect(now time.Time) bool { return now.UnixNano() < w.suspectUntil.Load() }

// retire closes the worker's connection once the calls on it have returned:
// a worker that deregistered finishes the calls it has, and they must not be
// cut off by the pool. Each call ends by its caller's deadline, or when
// keepalive finds the connection dead; retireDrain bounds the wait for
// calls that have neither, so that a worker stuck with its connection
// alive is still let go.
func (w *worker) retire(done func()) {
	go func() {
		defer done()
		give := time.Now().Add(retireDrain)
		for w.outstanding.Load() > 0 && time.Now().Before(give) && !w.dropped.Load() {
			time.Sleep(50 * time.Millisecond)
		}
		w.mux.close()
		w.conn.Close()
	}()
}

// retireDrain is how long a retired worker's calls may still run: longer
// than a stopping worker drains its calls (30 s in `taskworker worker`).
const retireDrain = time.Minute

// routeTable maps each function to the workers that serve it. It is rebuilt
// when the set of workers or their functions change, and read without locks.
type routeTable struct {
	byFunction map[string][]route
	// byRuntime lists the workers that run deployed functions of each
	// sandbox runtime (routes without a spec).
	byRuntime map[v1.Runtime][]route
	// storage lists the workers that keep file shards; draining, those
	// of them that are drained (their shards are read, no new ones go
	// there).
	storage  []placement.Worker
	draining map[string]bool
	byID     map[string]*worker
}

type route struct {
	w    *worker
	spec *v1.FunctionSpec
}

// registry is the pool's view of the live workers, kept current by a watch
// on etcd, and the writes that workers' registrations make.
type registry struct {
	cli    *clientv3.Client
	prefix string
	ttl    time.Duration
	log    *slog.Logger
	// dial connects to a worker, checking that it is the worker id names.
	dial func(id, address string) (*grpc.ClientConn, error)
	// clusterID is the network's identity (see clusterID).
	clusterID string
	// deployed returns the deployment of a function name, if any: a
	// worker may not serve a native function of that name.
	deployed func(name string) *v1.Deployment

	mu      sync.Mutex
	workers map[string]*worker
	// retiring holds the workers that left and are finishing their calls,
	// so that a revocation cuts them off too.
	retiring map[string][]*worker
	table    atomic.Pointer[routeTable]

	// drains holds the drained workers' drain records, by worker id
	// (drain.go); a drained worker is left out of the route table.
	drainPrefix, reportPrefix string
	drains                    map[string]drainRecord
	// replicas names this replica and the others in drain reports (the
	// task runners); nil until the runner starts.
	replicas replicaSet
	runCtx   context.Context
	drainers sync.WaitGroup
}

func newRegistry(cli *clientv3.Client, prefix string, ttl time.Duration, log *slog.Logger) *registry {
	r := &registry{
		cli:          cli,
		prefix:       prefix + "workers/",
		ttl:          ttl,
		log:          log,
		workers:      map[string]*worker{},
		retiring:     map[string][]*worker{},
		drainPrefix:  prefix + "drains/",
		reportPrefix: prefix + "drainreports/",
		drains:       map[string]drainRecord{},
		deployed:     func(string) *v1.Deployment { return nil },
	}
	r.table.Store(&routeTable{byFunction: map[string][]route{}, byRuntime: map[v1.Runtime][]route{}, byID: map[string]*worker{}})
	return r
}

// dialWorker connects to a worker over creds.
func dialWorker(address string, creds credentials.TransportCredentials) (*grpc.ClientConn, error) {
	conn, err := grpc.NewClient(address,
		grpc.WithTransportCredentials(creds),
		grpc.WithContextDialer(rawio.Dial),
		grpc.WithDefaultCallOptions(grpc.MaxCallRecvMsgSize(maxMessageBytes), grpc.MaxCallSendMsgSize(maxMessageBytes)),
		grpc.WithInitialWindowSize(1<<20),
		grpc.WithInitialConnWindowSize(1<<22),
		liveness.DialOption(),
	)
	if err != nil {
		return nil, err
	}
	conn.Connect()
	return conn, nil
}

// run follows the workers in etcd until ctx ends.
func (r *registry) run(ctx context.Context, ready chan<- struct{}) {
	r.mu.Lock()
	r.runCtx = ctx
	r.mu.Unlock()
	drainsReady, workersReady := make(chan struct{}), make(chan struct{})
	var wg sync.WaitGroup
	wg.Go(func() { etcdwatch.Prefix(ctx, r.cli, r.drainPrefix, r.applyDrains, drainsReady) })
	wg.Go(func() { etcdwatch.Prefix(ctx, r.cli, r.prefix, r.apply, workersReady) })
	go func() {
		for _, c := range []chan struct{}{drainsReady, workersReady} {
			select {
			case <-c:
			case <-ctx.Done():
				return
			}
		}
		close(ready)
	}()
	wg.Wait()
	r.drainers.Wait()
	r.mu.Lock()
	defer r.mu.Unlock()
	for id, w := range r.workers {
		w.mux.close()
		w.conn.Close()
		delete(r.workers, id)
	}
}

func (r *registry) apply(kvs []etcdwatch.KV, reset bool, _ int64) {
	r.mu.Lock()
	defer r.mu.Unlock()
	seen := map[string]bool{}
	changed := reset
	for _, e := range kvs {
		id := strings.TrimPrefix(e.Key, r.prefix)
		seen[id] = true
		old := r.workers[id]
		if e.Value == nil {
			if old != nil {
				r.retire(old)
				delete(r.workers, id)
				if d, ok := r.drains[id]; ok && d.Lease == old.info.Load().LeaseId {
					delete(r.drains, id) // its drain went with the same lease
				}
				changed = true
				r.log.Info("worker left", "worker", id)
			}
			continue
		}
		info, err := decodeRecord(e.Value)
		if err != nil {
			r.log.Warn("ignoring an unreadable worker record", "key", e.Key, "err", err)
			continue
		}
		if d, ok := r.drains[id]; ok && d.Lease != info.LeaseId {
			// A drain of an earlier registration, whose deletion may have
			// been seen before this registration: the drain is over.
			delete(r.drains, id)
		}
		if old != nil && old.address == info.Address {
			prev := old.info.Swap(info)
			if !sameFunctions(prev.Functions, info.Functions) || !slices.Equal(prev.Runtimes, info.Runtimes) || prev.StoresFiles != info.StoresFiles ||
				prev.LeaseId != info.LeaseId {
				changed = true
			}
			continue
		}
		conn, err := r.dial(id, info.Address)
		if err != nil {
			r.log.Warn("cannot dial worker", "worker", id, "address", info.Address, "err", err)
			continue
		}
		w := &worker{id: id, address: info.Address, conn: conn,
			mux: &callMux{client: v1.NewRPCServiceClient(conn)}}
		w.info.Store(info)
		if old != nil {
			r.retire(old)
		}
		r.workers[id] = w
		changed = true
		r.log.Info("worker joined", "worker", id, "address", info.Address, "functions", len(info.Functions))
	}
	if reset {
		for id, w := range r.workers {
			if !seen[id] {
				r.retire(w)
				delete(r.workers, id)
				if d, ok := r.drains[id]; ok && d.Lease == w.info.Load().LeaseId {
					delete(r.drains, id)
				}
			}
		}
	}
	if changed {
		r.rebuild()
	}
}

// retire lets a worker that left finish its calls (worker.retire),
// remembering it until then so that drop can cut it off; r.mu is held.
func (r *registry) retire(w *worker) {
	r.retiring[w.id] = append(r.retiring[w.id], w)
	w.retire(func() {
		r.mu.Lock()
		defer r.mu.Unlock()
		r.retiring[w.id] = slices.DeleteFunc(r.retiring[w.id], func(x *worker) bool { return x == w })
		if len(r.retiring[w.id]) == 0 {
			delete(r.retiring, w.id)
		}
	})
}

// drop cuts off a worker whose certificate was revoked: its connection is
// closed at once, with the calls on it, and it is routed to no more.
func (r *registry) drop(id string) {
	r.mu.Lock()
	defer r.mu.Unlock()
	var cut []*worker
	if w := r.workers[id]; w != nil {
		cut = append(cut, w)
		delete(r.workers, id)
		r.rebuild()
	}
	cut = append(cut, r.retiring[id]...)
	for _, w := range cut {
		w.dropped.Store(true)
		w.mux.close()
		w.conn.Close()
	}
	if len(cut) > 0 {
		r.log.Warn("worker dropped: its certificate was revoked", "worker", id)
	}
}

func sameFunctions(a, b []*v1.FunctionSpec) bool {
	return slices.EqualFunc(a, b, func(x, y *v1.FunctionSpec) bool { return proto.Equal(x, y) })
}

// rebuild recomputes the route table; r.mu is held.
func (r *registry) rebuild() {
	t := &routeTable{byFunction: map[string][]route{}, byRuntime: map[v1.Runtime][]route{}, byID: map[string]*worker{},
		draining: map[string]bool{}}
	for _, id := range slices.Sorted(maps.Keys(r.workers)) {
		w := r.workers[id]
		info := w.info.Load()
		if r.drained(w) {
			// No new calls, tasks nor shards; its shards are still read
			// and kept.
			if info.StoresFiles {
				t.storage = append(t.storage, placement.Worker{ID: id, Zone: info.Labels["zone"]})
				t.byID[id] = w
				t.draining[id] = true
			}
			continue
		}
		for _, f := range info.Functions {
			t.byFunction[f.Name] = append(t.byFunction[f.Name], route{w: w, spec: f})
		}
		for _, rt := range info.Runtimes {
			t.byRuntime[rt] = append(t.byRuntime[rt], route{w: w})
		}
		if info.StoresFiles {
			t.storage = append(t.storage, placement.Worker{ID: id, Zone: info.Labels["zone"]})
			t.byID[id] = w
		}
	}
	r.table.Store(t)
}

// routes returns the workers serving a function.
func (r *registry) routes(function string) []route {
	return r.table.Load().byFunction[function]
}

// runtimeRoutes returns the workers that run deployed functions of a
// runtime.
func (r *registry) runtimeRoutes(rt v1.Runtime) []route {
	return r.table.Load().byRuntime[rt]
}

// StorageWorkers returns the live workers that keep file shards.
func (r *registry) StorageWorkers() []placement.Worker {
	return r.table.Load().storage
}

// Draining reports whether a storage worker is drained: new shards go
// elsewhere.
func (r *registry) Draining(id string) bool {
	return r.table.Load().draining[id]
}

// ShardClient returns a client of a live storage worker's ShardService.
func (r *registry) ShardClient(id string) (v1.ShardServiceClient, bool) {
	w, ok := r.table.Load().byID[id]
	if !ok {
		return nil, false
	}
	return v1.NewShardServiceClient(w.conn), true
}

// list returns the live workers' descriptions, sorted by id.
func (r *registry) list() []*v1.WorkerInfo {
	r.mu.Lock()
	defer r.mu.Unlock()
	out := make([]*v1.WorkerInfo, 0, len(r.workers))
	for _, id := range slices.Sorted(maps.Keys(r.workers)) {
		w := r.workers[id]
		info := w.info.Load()
		if r.drained(w) {
			info = proto.Clone(info).(*v1.WorkerInfo)
			info.Draining, info.DrainDeadlineMs = true, r.drains[id].DeadlineMs
		}
		out = append(out, info)
	}
	return out
}

// register stores a worker's record under a new lease. A record left by an
// earlier registration of the same id (a restarted worker) is replaced and
// its lease revoked.
func (r *registry) register(ctx context.Context, req *v1.RegisterRequest) (*v1.RegisterResponse, error) {
	if err := names.WorkerID(req.WorkerId); err != nil {
		return nil, status.Error(codes.InvalidArgument, err.Error())
	}
	address, err := resolveAddress(ctx, req.Address)
	if err != nil {
		return nil, status.Errorf(codes.InvalidArgument, "worker address %q: %v", req.Address, err)
	}
	if req.ClusterId != "" && req.ClusterId != r.clusterID {
		return nil, status.Errorf(codes.FailedPrecondition, "worker %s: its data directory belongs to network %s, and this pool serves network %s; give the worker a data directory of its own (--data-dir), or point it at its own network's pool",
			req.WorkerId, req.ClusterId, r.clusterID)
	}
	listed := map[string]bool{}
	for _, f := range req.Functions {
		if err := names.Function(f.Name); err != nil {
			return nil, status.Error(codes.InvalidArgument, err.Error())
		}
		if listed[f.Name] {
			return nil, status.Errorf(codes.InvalidArgument, "function %q is listed twice", f.Name)
		}
		listed[f.Name] = true
		if d := r.deployed(f.Name); d != nil {
			return nil, status.Errorf(codes.AlreadyExists, "worker %s: function %q is deployed (by user %s), and a native function never takes a deployed one's name: rename the native function, or undeploy the deployed one first",
				req.WorkerId, f.Name, d.Owner)
		}
	}
	key := r.prefix + req.WorkerId
	prev, err := r.cli.Get(ctx, key)
	if err != nil {
		return nil, serving.EtcdError(err)
	}
	lease, err := r.cli.Grant(ctx, int64((r.ttl+time.Second-1)/time.Second))
	if err != nil {
		return nil, serving.EtcdError(err)
	}
	now := time.Now().UnixMilli()
	info := &v1.WorkerInfo{
		WorkerId:        req.WorkerId,
		Address:         address,
		Functions:       req.Functions,
		Labels:          req.Labels,
		Version:         req.Version,
		Runtimes:        req.Runtimes,
		StoresFiles:     req.StoresFiles,
		LeaseId:         int64(lease.ID),
		RegisteredAtMs:  now,
		LastHeartbeatMs: now,
	}
	rec, err := encodeRecord(info)
	if err != nil {
		return nil, status.Errorf(codes.Internal, "encoding worker record: %v", err)
	}
	if _, err := r.cli.Put(ctx, key, rec, clientv3.WithLease(lease.ID)); err != nil {
		return nil, serving.EtcdError(err)
	}
	if len(prev.Kvs) > 0 && prev.Kvs[0].Lease != 0 && clientv3.LeaseID(prev.Kvs[0].Lease) != lease.ID {
		// The key now belongs to the new lease, so revoking the old one
		// deletes nothing of the new registration.
		_, _ = r.cli.Revoke(ctx, clientv3.LeaseID(prev.Kvs[0].Lease))
	}
	return &v1.RegisterResponse{
		LeaseId:             int64(lease.ID),
		LeaseTtlMs:          lease.TTL * 1000,
		HeartbeatIntervalMs: (r.ttl / 3).Milliseconds(),
		Address:             address,
		ClusterId:           r.clusterID,
	}, nil
}

// resolveAddress fills in the host of a worker's address from the
// connection it registered on when the worker listens on all interfaces.
func resolveAddress(ctx context.Context, address string) (string, error) {
	host, port, err := net.SplitHostPort(address)
	if err != nil {
		return "", err
	}
	if port == "" || port == "0" {
		return "", errors.New("no port")
	}
	if host == "" || net.ParseIP(host) != nil && net.ParseIP(host).IsUnspecified() {
		p, ok := peer.FromContext(ctx)
		if !ok {
			return "", errors.New("no host, and the registration's peer address is unknown")
		}
		peerHost, _, err := net.SplitHostPort(p.Addr.String())
		if err != nil {
			return "", fmt.Errorf("no host, and peer address %s: %w", p.Addr, err)
		}
		host = peerHost
	}
	return net.JoinHostPort(host, port), nil
}

// heartbeat renews a worker's lease and records its load.
func (r *registry) heartbeat(ctx context.Context, req *v1.HeartbeatRequest) error {
	if _, err := r.cli.KeepAliveOnce(ctx, clientv3.LeaseID(req.LeaseId)); err != nil {
		if errors.Is(err, rpctypes.ErrLeaseNotFound) {
			return status.Errorf(codes.NotFound, "worker %s: lease %x expired; register again", req.WorkerId, req.LeaseId)
		}
		return serving.EtcdError(err)
	}
	key := r.prefix + req.WorkerId
	resp, err := r.cli.Get(ctx, key)
	if err != nil {
		return serving.EtcdError(err)
	}
	if len(resp.Kvs) == 0 || resp.Kvs[0].Lease != req.LeaseId {
		return status.Errorf(codes.NotFound, "worker %s: lease %x no longer holds the registration (another worker registered under this id?); register again", req.WorkerId, req.LeaseId)
	}
	info, err := decodeRecord(resp.Kvs[0].Value)
	if err != nil {
		return status.Errorf(codes.Internal, "worker %s: unreadable record: %v", req.WorkerId, err)
	}
	info.Inflight = req.Inflight
	info.CallsTotal = req.CallsTotal
	if len(req.CompiledModules) > maxCompiledReported {
		req.CompiledModules = req.CompiledModules[:maxCompiledReported]
	}
	info.CompiledModules = req.CompiledModules
	info.LastHeartbeatMs = time.Now().UnixMilli()
	rec, err := encodeRecord(info)
	if err != nil {
		return status.Errorf(codes.Internal, "encoding worker record: %v", err)
	}
	txn, err := r.cli.Txn(ctx).
		If(clientv3.Compare(clientv3.ModRevision(key), "=", resp.Kvs[0].ModRevision)).
		Then(clientv3.OpPut(key, rec, clientv3.WithLease(clientv3.LeaseID(req.LeaseId)))).
		Commit()
	if err != nil {
		return serving.EtcdError(err)
	}
	if !txn.Succeeded {
		// A concurrent registration or heartbeat won; the lease is renewed
		// either way, and the load figures are refreshed next time.
		r.log.Debug("heartbeat raced another write", "worker", req.WorkerId)
	}
	return nil
}

// deregister removes a worker at once.
func (r *registry) deregister(ctx context.Context, req *v1.DeregisterRequest) error {
	key := r.prefix + req.WorkerId
	resp, err := r.cli.Get(ctx, key)
	if err != nil {
		return serving.EtcdError(err)
	}
	if len(resp.Kvs) == 0 || resp.Kvs[0].Lease != req.LeaseId {
		return nil // already gone, or replaced: nothing of ours to remove
	}
	if _, err := r.cli.Revoke(ctx, clientv3.LeaseID(req.LeaseId)); err != nil && !errors.Is(err, rpctypes.ErrLeaseNotFound) {
		return serving.EtcdError(err)
	}
	return nil
}

// maxCompiledReported bounds the compiled modules a heartbeat may list, so
// a worker cannot bloat its record.
const maxCompiledReported = 1024
