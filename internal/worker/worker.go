package worker

import (
	"context"
	"errors"
	"fmt"
	"log/slog"
	"maps"
	"net"
	"path/filepath"
	"slices"
	"sync"
	"sync/atomic"
	"time"

	"google.golang.org/grpc"
	"google.golang.org/grpc/codes"
	"google.golang.org/grpc/health"
	healthpb "google.golang.org/grpc/health/grpc_health_v1"
	"google.golang.org/grpc/metadata"
	"google.golang.org/grpc/reflection"
	"google.golang.org/grpc/status"

	v1 "github.com/hivemind/taskworker/api/taskworker/v1"
	"github.com/hivemind/taskworker/internal/auth"
	"github.com/hivemind/taskworker/internal/function"
	"github.com/hivemind/taskworker/internal/liveness"
	"github.com/hivemind/taskworker/internal/metrics"
	"github.com/hivemind/taskworker/internal/names"
	"github.com/hivemind/taskworker/internal/pools"
	"github.com/hivemind/taskworker/internal/rawio"
	"github.com/hivemind/taskworker/internal/serving"
	"github.com/hivemind/taskworker/internal/shardserver"
	"github.com/hivemind/taskworker/internal/shardstore"
	"github.com/hivemind/taskworker/internal/tracing"
)

// DefaultListen is where a worker listens by default.
const DefaultListen = ":50052"

// maxMessageBytes bounds the messages a worker accepts and sends.
const maxMessageBytes = 16 << 20

// Config configures a worker.
type Config struct {
	// ID names the worker in the network; unique per live worker.
	ID string
	// Listen is the address to serve on.
	Listen string
	// Advertise is the address the pool dials, when it differs from the
	// listener's (NAT, containers). An empty or unspecified host is filled
	// in by the pool from the address the registration came from.
	Advertise string
	// PoolAddr is the pool to register with (host:port, or the addresses of
	// several pool replicas separated by commas); empty runs the worker
	// standalone, with a throwaway CA (callable directly with the
	// certificate it writes to <data-dir>/standalone-tls, for benchmarks).
	PoolAddr string
	// JoinToken pays for the worker's first enrolment (its certificate).
	// A worker with a valid certificate in its data directory needs none.
	JoinToken string
	// CA is the cluster CA's certificate (PEM): the worker verifies the pool
	// with it, and admits calls only from the pool's certificate it signed.
	CA []byte
	// CAName says where CA came from (a file), for error messages.
	CAName string
	// Insecure runs with no TLS: the worker registers with the join token,
	// and admits calls from any peer. Only with a pool run --insecure, on a
	// trusted host; logged as a warning at every start.
	Insecure bool
	Labels   map[string]string
	// Version is reported to the pool for listings.
	Version string
	// Sandbox runs deployed functions; nil runs only native ones.
	Sandbox Sandbox
	// DataDir holds the worker's state: file shards (shards/) and deployed
	// modules (modules/). Empty: the worker keeps no files, and modules only
	// in memory.
	DataDir string
	// ScrubInterval is the pause between passes of the shard scrubber, which
	// rereads every shard and reports damage (0: a day).
	ScrubInterval time.Duration
	// DrainDelay is how long Stop keeps accepting calls after deregistering,
	// so that pools that have not yet seen the deregistration do not fail.
	DrainDelay time.Duration
	// DrainGrace, when set, has Stop ask the pool to drain this worker
	// first: no new calls nor tasks come, the running ones get this long,
	// then the pool hands back the tasks still running here.
	DrainGrace time.Duration
	Logger     *slog.Logger
	// Metrics, when set, receives the worker's metrics (metrics.NewWorker):
	// its RPCs, the calls it runs, its sandbox's processes, its shards.
	Metrics *metrics.Metrics
	// Tracing, when set, records a span for each call (continuing the
	// pool's trace) and one for each sandboxed run; nil: no span work.
	Tracing *tracing.Tracing
}

// Validate reports a configuration that cannot work, saying what to change.
func (c Config) Validate() error {
	if err := names.WorkerID(c.ID); err != nil {
		return err
	}
	if c.PoolAddr != "" {
		if _, err := pools.Parse(c.PoolAddr); err != nil {
			return fmt.Errorf("worker: %w; pass --pool (or TASKWORKER_POOL) like 127.0.0.1:50051, or 10.0.0.1:50051,10.0.0.2:50051 for several pools", err)
		}
	}
	if c.PoolAddr != "" && c.Insecure && c.JoinToken == "" {
		return errors.New("worker: a join token is needed to register with an --insecure pool: pass --join-token-file (the pool writes it to join.token in its data directory)")
	}
	if c.JoinToken != "" {
		if err := auth.Validate(c.JoinToken); err != nil {
			return fmt.Errorf("worker join token: %w", err)
		}
	}
	if c.PoolAddr != "" && !c.Insecure && len(c.CA) == 0 {
		return errors.New("worker: no CA certificate to verify the pool with: pass --ca (or TASKWORKER_CA) with the network's ca.crt (in the pool's data directory; 'taskworker up' writes its path to its env file), or --insecure if the pool runs with it")
	}
	return nil
}

type entry struct {
	fn         *function.Func
	idempotent bool
}

// Server is a worker: New, Register functions, Start, then Stop (or Kill).
type Server struct {
	cfg Config
	log *slog.Logger

	funcs     atomic.Pointer[map[string]entry]
	funcsMu   sync.Mutex // serialises writers of funcs
	sandboxed perCaller  // sandboxed calls running, by caller
	changed   chan struct{}
	inflight  atomic.Int64
	completed atomic.Int64
	metrics   *workerMetrics // nil: no metrics

	lis    net.Listener
	grpc   *grpc.Server
	health *health.Server
	// pool is the connection to the pool, made again after an enrolment
	// so that it presents the new certificate.
	pool atomic.Pointer[grpc.ClientConn]
	id   *identity

	// draining is closed when Stop begins refusing calls, so that call
	// streams end and GracefulStop can finish.
	draining chan struct{}

	modules *moduleCache
	shards  *shardstore.Store // nil without a data directory

	registered     chan struct{}
	registeredOnce sync.Once
	lease          atomic.Int64
	// lastRefusal holds the pool's last refusal of the registration (a bad
	// token or request, which retrying does not mend), for WaitRegistered.
	lastRefusal atomic.Pointer[error]

	// network is the cluster ID recorded in the data directory ("" before
	// the first registration); only Start and the registration loop use it.
	network string
	// refused is closed when the pool refused the worker for good (its data
	// directory belongs to another network); refusal says why.
	refused     chan struct{}
	refusal     error
	refusedOnce sync.Once

	cancel  context.CancelFunc
	serving sync.WaitGroup // the gRPC server
	looping sync.WaitGroup // the registration loop
}

// New checks the configuration and returns a worker with no functions. The
// worker keeps its own copy of cfg: changing cfg.Labels afterwards changes
// nothing.
func New(cfg Config) (*Server, error) {
	if err := cfg.Validate(); err != nil {
		return nil, err
	}
	cfg.Labels = maps.Clone(cfg.Labels)
	if cfg.Listen == "" {
		cfg.Listen = DefaultListen
	}
	log := cfg.Logger
	if log == nil {
		log = slog.New(slog.DiscardHandler)
	}
	s := &Server{
		cfg:        cfg,
		log:        log.With("worker", cfg.ID),
		changed:    make(chan struct{}, 1),
		draining:   make(chan struct{}),
		registered: make(chan struct{}),
		refused:    make(chan struct{}),
	}
	s.metrics = newWorkerMetrics(cfg.Metrics, &s.inflight)
	s.funcs.Store(&map[string]entry{})
	s.modules = &moduleCache{fetch: s.fetchModule}
	if cfg.DataDir != "" {
		s.modules.dir = filepath.Join(cfg.DataDir, "modules")
	}
	return s, nil
}

// Register adds a function. Registering after Start re-announces the
// worker's functions to the pool.
func (s *Server) Register(name string, fn any, idempotent bool) error {
	if err := names.Function(name); err != nil {
		return err
	}
	f, err := function.Bind(name, fn)
	if err != nil {
		return err
	}
	s.funcsMu.Lock()
	defer s.funcsMu.Unlock()
	old := *s.funcs.Load()
	if _, dup := old[name]; dup {
		return fmt.Errorf("function %q is already registered on worker %s", name, s.cfg.ID)
	}
	next := maps.Clone(old)
	next[name] = entry{fn: f, idempotent: idempotent}
	s.funcs.Store(&next)
	select {
	case s.changed <- struct{}{}:
	default:
	}
	return nil
}

func (s *Server) specs() []*v1.FunctionSpec {
	funcs := *s.funcs.Load()
	out := make([]*v1.FunctionSpec, 0, len(funcs))
	for _, name := range slices.Sorted(maps.Keys(funcs)) {
		e := funcs[name]
		out = append(out, &v1.FunctionSpec{Name: name, Idempotent: e.idempotent, Signature: e.fn.Signature()})
	}
	return out
}

// Start listens on addr (Config.Listen when empty), serves, and (with a
// pool) starts registering. It returns once the worker serves;
// WaitRegistered waits for the pool to list it.
func (s *Server) Start(ctx context.Context, addr string) (err error) {
	if addr == "" {
		addr = s.cfg.Listen
	}
	serving.TuneGC() // a worker's process serves calls: its heap is small and its allocations many
	s.lis, err = net.Listen("tcp", addr)
	if err != nil {
		return fmt.Errorf("worker %s: listen: %w", s.cfg.ID, err)
	}
	s.lis = rawio.Listener(s.lis)
	if s.cfg.DataDir != "" {
		if s.network, err = readNetwork(s.cfg.DataDir); err != nil {
			s.lis.Close()
			return fmt.Errorf("worker %s: %w", s.cfg.ID, err)
		}
		scfg := shardstore.DefaultConfig(filepath.Join(s.cfg.DataDir, "shards"))
		scfg.Logger = s.log
		if s.cfg.ScrubInterval > 0 {
			scfg.ScrubInterval = s.cfg.ScrubInterval
		}
		if s.shards, err = shardstore.Open(scfg); err != nil {
			s.lis.Close()
			return fmt.Errorf("worker %s: %w", s.cfg.ID, err)
		}
		if s.metrics != nil {
			s.metrics.store.Store(s.shards)
		}
	}
	if s.cfg.Insecure {
		s.log.Warn("INSECURE: the worker runs with no TLS (--insecure): any peer that reaches its address can call its functions and read and write its shards; use it only on a trusted host")
	} else if err := s.loadIdentity(); err != nil {
		s.lis.Close()
		s.closeShards()
		return fmt.Errorf("worker %s: %w", s.cfg.ID, err)
	}
	opts := append(liveness.ServerOptions(), s.metrics.serverOptions()...)
	// The call stream carries many calls: each is traced on its own (callSpan).
	opts = append(opts, s.cfg.Tracing.ServerOptions(v1.RPCService_CallStream_FullMethodName)...)
	s.grpc = grpc.NewServer(append(opts,
		grpc.Creds(s.serverCredentials()),
		grpc.MaxRecvMsgSize(maxMessageBytes),
		grpc.MaxSendMsgSize(maxMessageBytes),
		grpc.InitialWindowSize(1<<20),
		grpc.InitialConnWindowSize(1<<22),
		shardserver.ServerOption(), // shards answered without a copy
		// Who may call what: internal/auth's table.
		grpc.ChainUnaryInterceptor(auth.UnaryWorkerInterceptor(s.isPool)),
		grpc.ChainStreamInterceptor(auth.StreamWorkerInterceptor(s.isPool)),
	)...)
	v1.RegisterRPCServiceServer(s.grpc, rpcService{s: s})
	if s.shards != nil {
		v1.RegisterShardServiceServer(s.grpc, shardserver.New(s.shards, shardserver.Options{Logger: s.log}))
	}
	s.health = health.NewServer()
	healthpb.RegisterHealthServer(s.grpc, s.health)
	reflection.Register(s.grpc)
	runCtx, cancel := context.WithCancel(context.Background())
	s.cancel = cancel
	srv, lis := s.grpc, s.lis
	s.serving.Add(1)
	go func() {
		defer s.serving.Done()
		_ = srv.Serve(lis)
	}()
	if s.cfg.PoolAddr != "" {
		conn, err := s.dialPool(true)
		if err != nil {
			s.Kill()
			return err
		}
		s.pool.Store(conn)
		s.looping.Add(1)
		go func() {
			defer s.looping.Done()
			s.registerLoop(runCtx)
		}()
		if !s.cfg.Insecure {
			s.looping.Add(1)
			go func() {
				defer s.looping.Done()
				s.renewLoop(runCtx)
			}()
		}
		if s.shards != nil {
			s.looping.Add(1)
			go func() {
				defer s.looping.Done()
				// Damage is reported once the pool knows the worker.
				select {
				case <-s.registered:
				case <-runCtx.Done():
					return
				}
				_ = shardserver.RunScrubber(runCtx, s.shards, s.reportDamage, shardserver.ScrubberOptions{Logger: s.log})
			}()
		}
	}
	s.log.Info("worker serving", "address", s.lis.Addr().String(), "pool", s.cfg.PoolAddr)
	return nil
}

// Addr returns the address the worker serves on.
func (s *Server) Addr() string { return s.lis.Addr().String() }

// Services returns what the worker's gRPC server serves, once started, for
// the test that every method is in internal/auth's table.
func (s *Server) Services() map[string]grpc.ServiceInfo { return s.grpc.GetServiceInfo() }

// ID returns the worker's id.
func (s *Server) ID() string { return s.cfg.ID }

// WaitRegistered waits until the pool has accepted the worker's
// registration.
func (s *Server) WaitRegistered(ctx context.Context) error {
	select {
	case <-s.registered:
		return nil
	case <-s.refused:
		return s.refusal
	case <-ctx.Done():
		if err := s.lastRefusal.Load(); err != nil {
			return fmt.Errorf("worker %s not registered with the pool at %s, which refused it: %w", s.cfg.ID, s.cfg.PoolAddr, *err)
		}
		return fmt.Errorf("worker %s not registered with the pool at %s: %w", s.cfg.ID, s.cfg.PoolAddr, ctx.Err())
	}
}

// Refused is closed when the pool has refused the worker for good: its data
// directory belongs to another network. Err says why; the worker has
// stopped registering and closed its shard store, and should be stopped.
func (s *Server) Refused() <-chan struct{} { return s.refused }

// Err returns why the pool refused the worker, once Refused is closed.
func (s *Server) Err() error {
	select {
	case <-s.refused:
		return s.refusal
	default:
		return nil
	}
}

// refuse gives up registering: the data directory belongs to another
// network. The shard store is closed at once, so that nothing of the other
// network's is served, moved or deleted.
func (s *Server) refuse(err error) {
	s.refusedOnce.Do(func() {
		s.log.Error("refusing to serve this data directory", "dir", s.cfg.DataDir, "err", err)
		if s.shards != nil {
			s.shards.Close()
		}
		s.refusal = err
		close(s.refused)
	})
}

// Inflight returns the number of calls running now.
func (s *Server) Inflight() int64 { return s.inflight.Load() }

// Stop leaves the pool, finishes the calls in flight (until ctx ends, then
// drops them) and stops serving. With DrainGrace, it first has the pool
// drain the worker, still registered: the tasks running here after the
// grace are handed back to run elsewhere.
func (s *Server) Stop(ctx context.Context) error {
	if s.grpc == nil {
		return nil
	}
	if lease := s.lease.Load(); s.cfg.DrainGrace > 0 && lease != 0 && s.poolConn() != nil {
		s.drain(ctx)
	}
	s.cancel()
	s.looping.Wait()
	if lease := s.lease.Load(); lease != 0 && s.poolConn() != nil {
		dctx, cancel := context.WithTimeout(ctx, 2*time.Second)
		_, err := v1.NewRegistryServiceClient(s.poolConn()).Deregister(dctx, &v1.DeregisterRequest{WorkerId: s.cfg.ID, LeaseId: lease})
		cancel()
		if err != nil {
			s.log.Warn("deregistering", "err", err)
		} else {
			t := time.NewTimer(s.cfg.DrainDelay)
			select {
			case <-t.C:
			case <-ctx.Done():
			}
			t.Stop()
		}
	}
	s.health.Shutdown()
	select {
	case <-s.draining:
	default:
		close(s.draining)
	}
	_ = serving.GracefulStop(ctx, s.grpc)
	s.serving.Wait()
	s.closePool()
	s.closeShards()
	return ctx.Err()
}

// drain asks the pool to drain this worker, then waits until no call runs
// here or the grace has run out and the pool has had a moment to hand back
// the tasks still running (their calls are cancelled, and end). A pool that
// does not answer at once (stopped, cut off) is not waited for: the worker
// leaves as it would without a drain.
func (s *Server) drain(ctx context.Context) {
	until := time.Now().Add(s.cfg.DrainGrace + time.Second)
	dctx, cancel := context.WithTimeout(ctx, 3*time.Second)
	_, err := v1.NewRegistryServiceClient(s.poolConn()).Drain(dctx, &v1.DrainRequest{WorkerId: s.cfg.ID, GraceMs: s.cfg.DrainGrace.Milliseconds(), NoWait: true})
	cancel()
	if err != nil {
		s.log.Warn("asking the pool to drain this worker; leaving without", "err", err)
		return
	}
	tick := time.NewTicker(20 * time.Millisecond)
	defer tick.Stop()
	for s.inflight.Load() > 0 && time.Now().Before(until) {
		select {
		case <-ctx.Done():
			return
		case <-tick.C:
		}
	}
	s.log.Info("drained: no new calls or tasks come; leaving the pool", "calls_still_running", s.inflight.Load())
}

// Kill stops at once, as a crash would: no deregistration, calls dropped.
// The pool notices when the worker's lease expires.
func (s *Server) Kill() {
	if s.cancel != nil {
		s.cancel()
	}
	if s.grpc != nil {
		s.grpc.Stop()
	}
	s.looping.Wait()
	s.serving.Wait()
	s.closePool()
	s.closeShards()
}

func (s *Server) closeShards() {
	if s.shards != nil {
		s.shards.Close()
		s.shards = nil
	}
}

// reportDamage tells the pool of shards the scrubber found damaged.
func (s *Server) reportDamage(ctx context.Context, keys []shardstore.Key) error {
	conn := s.poolConn()
	if conn == nil {
		return errors.New("standalone worker: no pool to report damaged shards to")
	}
	ctx, cancel := context.WithTimeout(ctx, 10*time.Second)
	defer cancel()
	_, err := v1.NewRegistryServiceClient(conn).ReportDamage(ctx, &v1.ReportDamageRequest{WorkerId: s.cfg.ID, Shards: shardserver.KeysToProto(keys)})
	return err
}

func (s *Server) closePool() {
	if conn := s.pool.Swap(nil); conn != nil {
		conn.Close()
	}
}

// rpcService serves CallFunction to the pool.
type rpcService struct {
	v1.UnimplementedRPCServiceServer
	s *Server
}

func (r rpcService) CallFunction(ctx context.Context, req *v1.FunctionCallRequest) (*v1.FunctionCallResponse, error) {
	s := r.s
	// The trailer tells the pool the answer came from this worker, so a
	// function's own Unavailable is never mistaken for a dead worker.
	_ = grpc.SetTrailer(ctx, metadata.Pairs(auth.TrailerWorker, s.cfg.ID))
	return s.call(ctx, req)
}

// call runs one call, native or deployed.
func (s *Server) call(ctx context.Context, req *v1.FunctionCallRequest) (*v1.FunctionCallResponse, error) {
	if req.TaskId != "" {
		ctx = function.WithTask(ctx, function.Task{ID: req.TaskId, Attempt: int(req.TaskAttempt)})
	}
	ctx = s.withCallHost(ctx, req)
	s.inflight.Add(1)
	defer s.inflight.Add(-1)
	defer s.completed.Add(1)
	var start time.Time
	if s.metrics != nil {
		start = time.Now()
	}
	ctx, span := s.callSpan(ctx, req)
	var result []byte
	var err error
	if req.Deployment != nil {
		result, err = s.callDeployed(ctx, req)
	} else {
		result, err = s.callNative(ctx, req)
	}
	if s.metrics != nil {
		s.metrics.observe(req.FunctionName, start, err)
	}
	s.logCall(ctx, req, err)
	if span != nil {
		endSpan(span, err)
	}
	if err != nil {
		return nil, err
	}
	return &v1.FunctionCallResponse{Result: result, WorkerId: s.cfg.ID}, nil
}

// callNative runs a Go function registered on the worker.
func (s *Server) callNative(ctx context.Context, req *v1.FunctionCallRequest) ([]byte, error) {
	e, ok := (*s.funcs.Load())[req.FunctionName]
	if !ok {
		return nil, status.Errorf(codes.NotFound, "worker %s does not serve function %q", s.cfg.ID, req.FunctionName)
	}
	result, err := e.fn.Call(ctx, req.Args)
	if err != nil {
		return nil, s.callError(ctx, req.FunctionName, err)
	}
	return result, nil
}

// callError turns a function's failure into a status for the caller.
func (s *Server) callError(ctx context.Context, name string, err error) error {
	var argErr *function.ArgumentError
	var panicErr *function.PanicError
	switch {
	case errors.As(err, &argErr):
		return status.Error(codes.InvalidArgument, err.Error())
	case errors.As(err, &panicErr):
		s.log.ErrorContext(ctx, "function panicked", "function", name, "panic", panicErr.Value, "stack", string(panicErr.Stack))
		return status.Errorf(codes.Internal, "%v (worker %s logged the stack)", err, s.cfg.ID)
	case ctx.Err() != nil && errors.Is(err, ctx.Err()):
		return status.FromContextError(ctx.Err()).Err()
	}
	if st, ok := status.FromError(err); ok {
		return st.Err()
	}
	return status.Errorf(codes.Unknown, "%s: %v", name, err)
}
