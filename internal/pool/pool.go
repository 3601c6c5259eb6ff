package pool

import (
	"context"
	"crypto/tls"
	"fmt"
	"log/slog"
	"net"
	"net/netip"
	"path/filepath"
	"sync"
	"time"

	clientv3 "go.etcd.io/etcd/client/v3"
	"go.uber.org/zap"
	"google.golang.org/grpc"
	"google.golang.org/grpc/health"
	healthpb "google.golang.org/grpc/health/grpc_health_v1"
	"google.golang.org/grpc/reflection"

	v1 "github.com/hivemind/taskworker/api/taskworker/v1"
	"github.com/hivemind/taskworker/internal/egress"
	"github.com/hivemind/taskworker/internal/etcdserver"
	"github.com/hivemind/taskworker/internal/files"
	"github.com/hivemind/taskworker/internal/keyring"
	"github.com/hivemind/taskworker/internal/liveness"
	"github.com/hivemind/taskworker/internal/pki"
	"github.com/hivemind/taskworker/internal/quota"
	"github.com/hivemind/taskworker/internal/rawio"
	"github.com/hivemind/taskworker/internal/secrets"
	"github.com/hivemind/taskworker/internal/serving"
	"github.com/hivemind/taskworker/internal/tasks"
)

// Server is a pool process: New, Start, then Stop (or Kill).
type Server struct {
	cfg Config
	log *slog.Logger

	etcd *etcdserver.Server // nil with external etcd
	cli  *clientv3.Client   // the embedded etcd's in-process client, or one of the external etcd
	// etcdEndpoints is where other processes reach the etcd.
	etcdEndpoints []string
	ca            *pki.CA     // nil with --insecure
	cert          *pki.Holder // the pool's certificate; nil with --insecure
	ids           *identities
	tokens        *tokenStore
	reg           *registry
	deploys       *deployments
	files         *files.Service
	quotas        *quota.Store
	egress        *egress.Client
	tasks         *tasks.Runner
	// taskStore and deploy read a user's tasks and modules for the
	// near-quota gauge.
	taskStore *tasks.Store
	deploy    *deployService
	keys      *keyring.Keyring
	calls     *calls
	secrets   *secrets.Store
	grpc      *grpc.Server
	health    *health.Server
	lis       net.Listener

	adminToken, joinToken string
	dnsAddr               netip.AddrPort

	cancel context.CancelFunc
	wg     sync.WaitGroup
}

// New checks the configuration; Start does the work.
func New(cfg Config) (*Server, error) {
	if err := cfg.Validate(); err != nil {
		return nil, err
	}
	log := cfg.Logger
	if log == nil {
		log = slog.New(slog.DiscardHandler)
	}
	return &Server{cfg: cfg, log: log.With("component", "pool")}, nil
}

// Start brings the pool up: etcd (embedded unless endpoints were given), the
// bootstrap tokens, the registry's view of the workers, then the gRPC
// listener. On error everything started is stopped again.
func (s *Server) Start(ctx context.Context) (err error) {
	defer func() {
		if err != nil {
			s.Kill()
		}
	}()
	if err := pki.OwnerOnlyDir(s.cfg.DataDir); err != nil {
		return fmt.Errorf("pool data directory: %w", err)
	}
	serving.TuneGC() // a pool's process serves calls: its heap is small and its allocations many
	if s.cfg.Insecure {
		s.log.Warn("INSECURE: the pool serves plaintext with no certificates (--insecure): tokens travel in the clear, any join-token holder can be any worker, and any peer can call the workers; use it only on a trusted host")
	} else if s.ca, err = s.loadCA(); err != nil {
		return err
	}
	etcdTLS, etcdServerTLS, err := s.etcdTLS()
	if err != nil {
		return fmt.Errorf("etcd TLS: %w", err)
	}
	endpoints := s.cfg.EtcdEndpoints
	if len(endpoints) == 0 {
		ecfg := etcdserver.DefaultConfig(filepath.Join(s.cfg.DataDir, "etcd"))
		if s.cfg.EtcdTickMs != 0 {
			ecfg.TickMs, ecfg.ElectionMs = s.cfg.EtcdTickMs, s.cfg.EtcdElectionMs
		}
		ecfg.TLS = etcdServerTLS
		if s.etcd, err = etcdserver.Start(ctx, ecfg); err != nil {
			return err
		}
		endpoints = s.etcd.Endpoints()
	} else if etcdTLS == nil {
		s.log.Warn("INSECURE: the pool talks to etcd in plaintext, with no client certificate; give --etcd-ca, --etcd-cert and --etcd-key", "etcd", endpoints)
	}
	s.etcdEndpoints = endpoints
	if s.etcd != nil {
		// Its own etcd, called in this process: the network and TLS
		// between the two are all cost and no protection.
		s.cli = s.etcd.Client()
	} else if s.cli, err = clientv3.New(clientv3.Config{
		TLS:         etcdTLS,
		Endpoints:   endpoints,
		DialTimeout: 5 * time.Second,
		// etcd stopped or cut off: its connection closes, and the pool's
		// requests fail instead of waiting on it.
		DialKeepAliveTime:    liveness.Time,
		DialKeepAliveTimeout: liveness.Timeout,
		Logger:               zap.NewNop(),
		Context:              context.WithoutCancel(ctx),
	}); err != nil {
		return fmt.Errorf("etcd client for %v: %w", endpoints, err)
	}
	s.tokens = newTokenStore(s.cli, s.cfg.Prefix)
	bctx, cancel := context.WithTimeout(ctx, 15*time.Second)
	defer cancel()
	if s.adminToken, err = s.tokens.bootstrap(bctx, s.cfg.DataDir, AdminTokenFile, "admin", v1.Role_ROLE_ADMIN); err != nil {
		return fmt.Errorf("admin token (is etcd at %v reachable?): %w", endpoints, err)
	}
	if s.joinToken, err = s.tokens.bootstrap(bctx, s.cfg.DataDir, JoinTokenFile, "worker", v1.Role_ROLE_WORKER); err != nil {
		return fmt.Errorf("join token: %w", err)
	}

	id, err := clusterID(bctx, s.cli, s.cfg.Prefix)
	if err != nil {
		return fmt.Errorf("cluster id: %w", err)
	}
	if s.ca != nil {
		if err := checkCA(bctx, s.cli, s.cfg.Prefix, s.ca); err != nil {
			return err
		}
		hosts := certHosts(s.cfg.Listen, s.cfg.TLSHosts)
		s.cert, err = pki.NewHolder(func() (tls.Certificate, error) {
			return s.ca.IssueKeyPair(pki.Leaf{CommonName: pki.PoolCommonName, URIs: []string{pki.PoolURI(id)}, Hosts: hosts,
				Server: true, Client: true, TTL: pki.PoolLifetime})
		})
		if err != nil {
			return fmt.Errorf("the pool's certificate: %w", err)
		}
	}
	s.reg = newRegistry(s.cli, s.cfg.Prefix, s.cfg.LeaseTTL, s.log)
	s.reg.clusterID = id
	s.reg.dial = s.dialWorker
	s.ids = newIdentities(s.cli, s.cfg.Prefix)
	s.ids.dropped = s.reg.drop
	runCtx, stop := context.WithCancel(context.Background())
	s.cancel = stop
	s.deploys = &deployments{}
	s.reg.deployed = s.deploys.named
	tokensReady, idsReady, workersReady, deploysReady := make(chan struct{}), make(chan struct{}), make(chan struct{}), make(chan struct{})
	s.goRun(func() { s.tokens.run(runCtx, tokensReady) })
	s.goRun(func() { s.ids.run(runCtx, idsReady) })
	s.goRun(func() { s.reg.run(runCtx, workersReady) })
	s.goRun(func() { s.deploys.run(runCtx, s.cli, s.cfg.Prefix+"deploy/", deploysReady) })
	for _, ready := range []chan struct{}{tokensReady, idsReady, workersReady, deploysReady} {
		select {
		case <-ready:
		case <-bctx.Done():
			return fmt.Errorf("loading state from etcd at %v: %w", endpoints, bctx.Err())
		}
	}
	keyFile := s.cfg.KeyFile
	if keyFile == "" {
		keyFile = filepath.Join(s.cfg.DataDir, keyring.FileName)
	}
	if s.keys, err = keyring.Open(keyFile); err != nil {
		return fmt.Errorf("master keys: %w", err)
	}
	if err := checkKeyring(bctx, s.cli, s.cfg.Prefix, s.keys); err != nil {
		return err
	}
	s.quotas = quota.New(s.cli, s.cfg.Prefix)
	quotasReady := make(chan struct{})
	s.goRun(func() { s.quotas.Run(runCtx, quotasReady) })
	select {
	case <-quotasReady:
	case <-bctx.Done():
		return fmt.Errorf("loading quotas from etcd at %v: %w", endpoints, bctx.Err())
	}
	if s.cfg.Quotas == nil {
		s.cfg.Quotas = s.quotas.Limits
	}
	fcfg := s.cfg.Files
	fcfg.Prefix, fcfg.Logger, fcfg.Keyring = s.cfg.Prefix, s.log, s.keys
	if fcfg.Limits == nil {
		fcfg.Limits = s.cfg.Quotas
	}
	if s.files, err = files.New(fcfg, s.cli, s.reg, checkUser); err != nil {
		return err
	}

	s.lis, err = net.Listen("tcp", s.cfg.Listen)
	if err != nil {
		return fmt.Errorf("pool listen: %w", err)
	}
	s.lis = rawio.Listener(s.lis)
	s.grpc = grpc.NewServer(append(append(append(liveness.ServerOptions(), s.cfg.Tracing.ServerOptions()...), s.metricsOptions()...),
		grpc.Creds(s.serverCredentials()),
		grpc.MaxRecvMsgSize(maxMessageBytes),
		grpc.MaxSendMsgSize(maxMessageBytes),
		grpc.MaxConcurrentStreams(maxConcurrentStreams),
		grpc.InTapHandle(s.tokens.tap),
		grpc.ChainUnaryInterceptor(s.unaryAuth),
		grpc.ChainStreamInterceptor(s.streamAuth),
		grpc.InitialWindowSize(1<<20),
		grpc.InitialConnWindowSize(1<<22),
		// Handlers run on long-lived goroutines whose stacks have already
		// grown, not on a new goroutine per call that grows its stack again
		// (RATIONALE.md, "What does the pool hop cost, and what did it
		// save?").
		grpc.NumStreamWorkers(streamWorkers),
		// Answers of calls are forwarded as the workers encoded them.
		grpc.ForceServerCodecV2(codec),
	)...)
	modules := &moduleStore{cli: s.cli, prefix: s.cfg.Prefix}
	if s.calls, err = newCalls(runCtx, s.cli, s.cfg.Prefix, s.keys); err != nil {
		return err
	}
	rpc := &rpcService{cfg: s.cfg, reg: s.reg, deploys: s.deploys, running: &callCounts{}, calls: s.calls}
	registerRPCService(s.grpc, rpc)
	ttl := s.cfg.WorkerCertTTL
	if ttl == 0 {
		ttl = pki.WorkerLifetime
	}
	v1.RegisterRegistryServiceServer(s.grpc, &registryService{reg: s.reg, files: s.files,
		enroller: &enroller{ca: s.ca, ids: s.ids, tokens: s.tokens, reg: s.reg, ttl: ttl, insecure: s.cfg.Insecure}})
	v1.RegisterAdminServiceServer(s.grpc, &adminService{reg: s.reg, tokens: s.tokens, deploys: s.deploys, files: s.files, ids: s.ids})
	s.secrets = secrets.New(s.cli, s.cfg.Prefix, s.keys)
	s.deploy = &deployService{cli: s.cli, prefix: s.cfg.Prefix + "deploy/", cfg: s.cfg,
		modules: modules, reg: s.reg, checker: s.cfg.Checker, deploys: s.deploys, secrets: s.secrets}
	v1.RegisterDeployServiceServer(s.grpc, s.deploy)
	v1.RegisterModuleServiceServer(s.grpc, &moduleService{modules: modules})
	v1.RegisterFileServiceServer(s.grpc, s.files)
	quota.NewServer(s.quotas, checkUser).Register(s.grpc)
	if err := s.startSecrets(); err != nil {
		return err
	}
	s.startTasks(runCtx, rpc)
	s.goRun(func() { s.runMetrics(runCtx) })
	if err := s.startDNS(runCtx); err != nil {
		return err
	}
	s.health = health.NewServer()
	healthpb.RegisterHealthServer(s.grpc, s.health)
	reflection.Register(s.grpc)
	srv, lis := s.grpc, s.lis
	s.goRun(func() { _ = srv.Serve(lis) })
	s.goRun(func() { s.files.Run(runCtx, s.lis.Addr().String()) })
	s.startUpkeep(runCtx)
	s.log.Info("pool serving", "address", s.lis.Addr().String(), "etcd", endpoints)
	return nil
}

func (s *Server) goRun(f func()) {
	s.wg.Add(1)
	go func() {
		defer s.wg.Done()
		f()
	}()
}

// Addr returns the address the pool serves on.
func (s *Server) Addr() string { return s.lis.Addr().String() }

// CACertPEM returns the cluster CA's certificate, which clients verify the
// pool with; nil with --insecure.
func (s *Server) CACertPEM() []byte {
	if s.ca == nil {
		return nil
	}
	return s.ca.CertPEM()
}

// AdminToken returns the network's bootstrap admin token.
func (s *Server) AdminToken() string { return s.adminToken }

// JoinToken returns the token workers join with.
func (s *Server) JoinToken() string { return s.joinToken }

// EtcdEndpoints returns the etcd the pool uses, so that another pool can
// share it.
func (s *Server) EtcdEndpoints() []string { return s.etcdEndpoints }

// ClusterID returns the network's identity, which workers record in their
// data directories.
func (s *Server) ClusterID() string { return s.reg.clusterID }

// Files returns the pool's file service, for tests' invariant checks.
func (s *Server) Files() *files.Service { return s.files }

// Keyring returns the master keys that wrap data keys.
func (s *Server) Keyring() *keyring.Keyring { return s.keys }

// Services returns what the pool's gRPC server serves, for the test that
// every method is in internal/auth's table.
func (s *Server) Services() map[string]grpc.ServiceInfo { return s.grpc.GetServiceInfo() }

// Running reports whether the pool serves (started, not yet stopped).
func (s *Server) Running() bool { return s.grpc != nil }

// WorkerIDs returns the ids of the workers the pool routes to, sorted.
func (s *Server) WorkerIDs() []string {
	var ids []string
	for _, w := range s.reg.list() {
		ids = append(ids, w.WorkerId)
	}
	return ids
}

// Stop drains in-flight calls (until ctx ends) and stops everything.
func (s *Server) Stop(ctx context.Context) error {
	if s.tasks != nil {
		// Running tasks get until ctx ends; Kill hands back the rest.
		if err := s.tasks.Drain(ctx); err != nil {
			s.log.Warn("stopping", "err", err)
		}
	}
	if s.grpc != nil {
		s.health.Shutdown()
		_ = serving.GracefulStop(ctx, s.grpc)
	}
	s.Kill()
	return ctx.Err()
}

// Kill stops everything at once, dropping in-flight calls: for tests that
// need a pool to vanish, and for cleanup after a failed Start.
func (s *Server) Kill() {
	if s.grpc != nil {
		s.grpc.Stop()
	} else if s.lis != nil {
		s.lis.Close()
	}
	if s.cancel != nil {
		s.cancel()
	}
	s.wg.Wait()
	if s.egress != nil {
		s.egress.Close()
	}
	if s.cli != nil {
		s.cli.Close()
	}
	if s.etcd != nil {
		s.etcd.Close()
	}
	s.grpc, s.cancel, s.cli, s.etcd = nil, nil, nil, nil
}
