// Package cluster starts a whole TaskWorker network inside one test: an
// embedded etcd, one or more pools and N workers, all on 127.0.0.1 port 0,
// with helpers to stop, kill and restart any of them. Integration tests share
// it; the end-to-end tests that run the built binary live in package e2e.
//
// It is locked as a real network is: one CA (Cluster.CA) signs the pools'
// and the workers' certificates and etcd's, etcd admits only the pools'
// certificate, and workers enrol with the join token. Tests that act as a
// node get its credentials here: EtcdClient (as the pool), WorkerConn (to a
// worker, as its pool), EnrollWorker (to the pool, as a worker), PoolConn
// (to the pool, with no credentials). StartEtcd is the one place the
// harnesses get a locked etcd.
//
// Every cluster checks its invariants when the test ends (t.Cleanup): every
// pool's view of the workers agrees with etcd's.
package cluster

import (
	"context"
	"fmt"
	"io/fs"
	"log/slog"
	"os"
	"path/filepath"
	"slices"
	"testing"
	"time"

	clientv3 "go.etcd.io/etcd/client/v3"
	"go.uber.org/zap"
	"google.golang.org/grpc"
	"google.golang.org/grpc/credentials"

	"github.com/hivemind/taskworker"
	v1 "github.com/hivemind/taskworker/api/taskworker/v1"
	"github.com/hivemind/taskworker/internal/deployed"
	"github.com/hivemind/taskworker/internal/etcdserver"
	"github.com/hivemind/taskworker/internal/examples"
	"github.com/hivemind/taskworker/internal/files"
	"github.com/hivemind/taskworker/internal/keyring"
	"github.com/hivemind/taskworker/internal/pki"
	"github.com/hivemind/taskworker/internal/pool"
	"github.com/hivemind/taskworker/internal/worker"
)

// Options shape a cluster. The zero value is one pool and three workers
// serving the example functions.
type Options struct {
	Pools   int
	Workers int
	// LeaseTTL of workers (default 4s: lost workers leave quickly, and a
	// worker starved of CPU for a second or two on a loaded machine keeps
	// its lease).
	LeaseTTL time.Duration
	// Setup registers functions on each worker; default: the examples.
	Setup func(w *worker.Server) error
	// Labels gives each worker its labels (e.g. a zone); default: none.
	Labels func(id string) map[string]string
	// Files configures the pools' file service; zero: tuned for tests
	// (64 KiB blocks, a 2s repair grace, inventories compared every second).
	Files *files.Config
	// PoolConfig, when set, adjusts pool i's configuration before it
	// starts.
	PoolConfig func(i int, cfg *pool.Config)
	// Sandbox gives workers a WebAssembly runtime for deployed functions,
	// and pools a checker for modules.
	Sandbox bool
	// WasmCache is the compilation cache the cluster's nodes share; tests
	// may share one across clusters (default: one per cluster).
	WasmCache string
	// StarlarkCommand starts the workers' Starlark children (the test
	// binary, re-executed; see starlarkrun.Main); empty: no Starlark.
	StarlarkCommand []string
	// WorkerCertTTL is the lifetime of the workers' certificates (0: the
	// pool's default, a day).
	WorkerCertTTL time.Duration
	// WasmCommand runs the workers' WebAssembly calls in child processes
	// (the test binary, re-executed; see sandbox.ChildMain); empty: in the
	// worker's process.
	WasmCommand []string
}

// Cluster is a running network.
type Cluster struct {
	t    testing.TB
	opts Options
	dir  string
	log  *slog.Logger

	Etcd    *etcdserver.Server
	Pools   []*pool.Server
	Workers []*worker.Server
	// Runners are the workers' sandboxes (with Options.Sandbox).
	Runners []*deployed.Runner

	poolAddrs  []string
	workerPool []int // the pool each worker registers with
	AdminToken string
	JoinToken  string
	// CA is the network's CA, shared by its pools (as an operator gives
	// every replica the same --ca-cert and --ca-key); etcd's certificates
	// are from it too.
	CA      *pki.CA
	etcdTLS pki.EtcdFiles
	caCert  string
	caKey   string
}

// New starts a cluster and stops it when the test ends.
func New(t testing.TB, opts Options) *Cluster {
	t.Helper()
	if opts.Pools == 0 {
		opts.Pools = 1
	}
	if opts.Workers == 0 {
		opts.Workers = 3
	}
	if opts.LeaseTTL == 0 {
		opts.LeaseTTL = 4 * time.Second
	}
	if opts.Labels == nil {
		opts.Labels = func(string) map[string]string { return nil }
	}
	if opts.Setup == nil {
		opts.Setup = func(w *worker.Server) error { return examples.Register(w.Register) }
	}
	c := &Cluster{t: t, opts: opts, dir: t.TempDir(), log: testLogger(t)}
	ctx := context.Background()

	var err error
	if c.Etcd, c.CA, c.etcdTLS, err = StartEtcd(ctx, c.dir); err != nil {
		t.Fatal(err)
	}
	t.Cleanup(c.Etcd.Close)
	c.caCert, c.caKey = filepath.Join(c.dir, "ca", pki.CACertFile), filepath.Join(c.dir, "ca", pki.CAKeyFile)

	for i := range opts.Pools {
		c.Pools = append(c.Pools, nil)
		c.poolAddrs = append(c.poolAddrs, "127.0.0.1:0")
		c.StartPool(i)
	}
	c.AdminToken, c.JoinToken = c.Pools[0].AdminToken(), c.Pools[0].JoinToken()
	for i := range opts.Workers {
		c.AddWorker(fmt.Sprintf("worker_%03d", i+1), i%opts.Pools)
	}
	c.WaitWorkers(opts.Workers)
	t.Cleanup(c.shutdown)
	return c
}

// StartEtcd starts an etcd for a test network in dir/etcd, locked as the
// pool's embedded one is (TLS, only the pool's client certificate), with a
// CA made in dir/ca: the one place the harnesses get their certificates.
// EtcdClient connects to it as the pool does.
func StartEtcd(ctx context.Context, dir string) (*etcdserver.Server, *pki.CA, pki.EtcdFiles, error) {
	ca, err := pki.LoadOrCreateCA(filepath.Join(dir, "ca"))
	if err != nil {
		return nil, nil, pki.EtcdFiles{}, err
	}
	ecfg := etcdserver.DefaultConfig(filepath.Join(dir, "etcd"))
	ecfg.TickMs, ecfg.ElectionMs = 10, 100
	var files pki.EtcdFiles
	if ecfg.TLS, files, err = etcdserver.Locked(ca, filepath.Join(dir, "etcd-tls")); err != nil {
		return nil, nil, pki.EtcdFiles{}, err
	}
	e, err := etcdserver.Start(ctx, ecfg)
	return e, ca, files, err
}

// EtcdClient returns a client of the cluster's etcd with the pool's
// certificate, closed when the test ends.
func (c *Cluster) EtcdClient() *clientv3.Client {
	c.t.Helper()
	cli, err := c.etcdClient()
	if err != nil {
		c.t.Fatal(err)
	}
	c.t.Cleanup(func() { cli.Close() })
	return cli
}

func (c *Cluster) etcdClient() (*clientv3.Client, error) {
	tlsCfg, err := pki.EtcdClientConfig(c.etcdTLS.CA, c.etcdTLS.ClientCert, c.etcdTLS.ClientKey)
	if err != nil {
		return nil, err
	}
	return clientv3.New(clientv3.Config{Endpoints: c.Etcd.Endpoints(), TLS: tlsCfg, Logger: zap.NewNop(), DialTimeout: 5 * time.Second})
}

// WorkerConn returns a connection to worker i as its pool: with a pool
// certificate of the network, for tests that call a worker's services
// directly.
func (c *Cluster) WorkerConn(i int) *grpc.ClientConn {
	c.t.Helper()
	cert, err := c.CA.IssueKeyPair(pki.Leaf{CommonName: pki.PoolCommonName, URIs: []string{pki.PoolURI(c.Pools[0].ClusterID())}, Client: true, TTL: time.Hour})
	if err != nil {
		c.t.Fatal(err)
	}
	h := &pki.Holder{}
	h.Set(cert)
	id := c.Workers[i].ID()
	conn, err := grpc.NewClient(c.Workers[i].Addr(), grpc.WithTransportCredentials(credentials.NewTLS(
		pki.ClientConfig(pki.Verify{CA: c.CA.Pool(), URI: pki.WorkerURI(c.Pools[0].ClusterID(), id)}, h))))
	if err != nil {
		c.t.Fatal(err)
	}
	c.t.Cleanup(func() { conn.Close() })
	return conn
}

// PoolConn returns a plain gRPC connection to pool p, trusting the
// network's CA and carrying no credentials, for tests that craft their own
// requests.
func (c *Cluster) PoolConn(p int) *grpc.ClientConn {
	c.t.Helper()
	return c.ConnTo(c.poolAddrs[p])
}

// ConnTo is PoolConn for a pool at addr that the test started itself.
func (c *Cluster) ConnTo(addr string) *grpc.ClientConn {
	c.t.Helper()
	conn, err := grpc.NewClient(addr, grpc.WithTransportCredentials(credentials.NewTLS(
		pki.ClientConfig(pki.Verify{CA: c.CA.Pool(), Host: pki.HostOf(addr)}, nil))))
	if err != nil {
		c.t.Fatal(err)
	}
	c.t.Cleanup(func() { conn.Close() })
	return conn
}

// EnrollWorker enrols worker id with pool p, paying with the join token as
// a new worker does, without running a worker, and returns a connection to
// the pool that presents the certificate it got: for tests that act as a
// worker, or as a fake one. The error is the pool's refusal.
func (c *Cluster) EnrollWorker(p int, id string) (*grpc.ClientConn, error) {
	c.t.Helper()
	key, err := pki.NewKey()
	if err != nil {
		c.t.Fatal(err)
	}
	csr, err := pki.NewCSR(key)
	if err != nil {
		c.t.Fatal(err)
	}
	ctx, cancel := context.WithTimeout(context.Background(), 10*time.Second)
	defer cancel()
	resp, err := v1.NewRegistryServiceClient(c.PoolConn(p)).Enroll(ctx, &v1.EnrollRequest{WorkerId: id, Csr: csr, JoinToken: c.JoinToken})
	if err != nil {
		return nil, err
	}
	cert, err := pki.KeyPair(resp.Certificate, key)
	if err != nil {
		c.t.Fatal(err)
	}
	h := &pki.Holder{}
	h.Set(cert)
	conn, err := grpc.NewClient(c.poolAddrs[p], grpc.WithTransportCredentials(credentials.NewTLS(
		pki.ClientConfig(pki.Verify{CA: c.CA.Pool(), Host: pki.HostOf(c.poolAddrs[p])}, h))))
	if err != nil {
		c.t.Fatal(err)
	}
	c.t.Cleanup(func() { conn.Close() })
	return conn, nil
}

// Snapshot returns every file under dir with its bytes, for tests that
// check a directory was left alone.
func Snapshot(t testing.TB, dir string) map[string][]byte {
	t.Helper()
	out := map[string][]byte{}
	err := filepath.WalkDir(dir, func(p string, d fs.DirEntry, err error) error {
		if err != nil || d.IsDir() {
			return err
		}
		b, err := os.ReadFile(p)
		out[p] = b
		return err
	})
	if err != nil {
		t.Fatal(err)
	}
	return out
}

func testLogger(t testing.TB) *slog.Logger {
	if os.Getenv("TASKWORKER_TEST_LOG") == "" {
		return slog.New(slog.DiscardHandler)
	}
	return slog.New(slog.NewTextHandler(os.Stderr, &slog.HandlerOptions{Level: slog.LevelDebug}))
}

// PoolConfig returns the configuration StartPool gives pool i: its data
// directory, address, the cluster's etcd and CA, and the test's options;
// for tests that start a pool process of their own over the same network.
func (c *Cluster) PoolConfig(i int) pool.Config {
	cfg := pool.DefaultConfig(fmt.Sprintf("%s/pool%d", c.dir, i))
	cfg.Listen = c.poolAddrs[i]
	cfg.EtcdEndpoints = c.Etcd.Endpoints()
	cfg.EtcdCA, cfg.EtcdCert, cfg.EtcdKey = c.etcdTLS.CA, c.etcdTLS.ClientCert, c.etcdTLS.ClientKey
	cfg.CACert, cfg.CAKey = c.caCert, c.caKey
	cfg.KeyFile = filepath.Join(c.dir, "ca", keyring.FileName)
	cfg.WorkerCertTTL = c.opts.WorkerCertTTL
	cfg.LeaseTTL = c.opts.LeaseTTL
	cfg.Logger = c.log.With("pool", i)
	if c.opts.Files != nil {
		cfg.Files = *c.opts.Files
	} else {
		cfg.Files.BlockSize = 64 << 10
		cfg.Files.RepairGrace = 2 * time.Second
		cfg.Files.RepairInterval = time.Second
		cfg.Files.InventoryInterval = time.Second
		// A write's shards are collected only after it has sent none
		// for 3s, twice 3s apart: far longer than any write here stalls.
		cfg.Files.GCInterval = 3 * time.Second
		cfg.Files.GCMinAge = 3 * time.Second
	}
	if c.opts.PoolConfig != nil {
		c.opts.PoolConfig(i, &cfg)
	}
	return cfg
}

// StartPool starts (or restarts) pool i on its previous address.
func (c *Cluster) StartPool(i int) {
	c.t.Helper()
	cfg := c.PoolConfig(i)
	if c.opts.Sandbox {
		checker, err := deployed.NewChecker(context.Background(), c.wasmCache(), c.opts.WasmCommand)
		if err != nil {
			c.t.Fatal(err)
		}
		c.t.Cleanup(func() { checker.Close(context.Background()) })
		cfg.Checker = checker
	}
	p, err := pool.New(cfg)
	if err != nil {
		c.t.Fatal(err)
	}
	// The port may still be held by the previous process for a moment.
	deadline := time.Now().Add(5 * time.Second)
	for {
		err = p.Start(context.Background())
		if err == nil || time.Now().After(deadline) {
			break
		}
		time.Sleep(50 * time.Millisecond)
	}
	if err != nil {
		c.t.Fatal(err)
	}
	c.Pools[i] = p
	c.poolAddrs[i] = p.Addr()
}

// wasmCache is the compilation cache every node of the cluster shares, so
// a module is compiled once per test (compiling is slow under -race).
func (c *Cluster) wasmCache() string {
	if c.opts.WasmCache != "" {
		return c.opts.WasmCache
	}
	return filepath.Join(c.dir, "wasm-cache")
}

// Dir returns the directory holding the cluster's data.
func (c *Cluster) Dir() string { return c.dir }

// PoolAddr returns pool i's address.
func (c *Cluster) PoolAddr(i int) string { return c.poolAddrs[i] }

// KillPool stops pool i at once, dropping its calls.
func (c *Cluster) KillPool(i int) {
	c.Pools[i].Kill()
}

// AddWorker starts a worker registered with pool p and returns its index.
// Its data directory is DIR/workers/<id>.
func (c *Cluster) AddWorker(id string, p int) int {
	w, r := c.startWorker(id, p)
	c.Workers = append(c.Workers, w)
	c.Runners = append(c.Runners, r)
	return len(c.Workers) - 1
}

// RestartWorker starts worker i again, with its id and data directory,
// after KillWorker or StopWorker.
func (c *Cluster) RestartWorker(i int) {
	c.Workers[i], c.Runners[i] = c.startWorker(c.Workers[i].ID(), c.workerPool[i])
}

func (c *Cluster) startWorker(id string, p int) (*worker.Server, *deployed.Runner) {
	c.t.Helper()
	dir := filepath.Join(c.dir, "workers", id)
	var runner *deployed.Runner
	var sandbox worker.Sandbox
	if c.opts.Sandbox {
		var err error
		if runner, err = deployed.New(context.Background(), deployed.Config{
			CacheDir: c.wasmCache(), StarlarkCommand: c.opts.StarlarkCommand, WasmCommand: c.opts.WasmCommand, Logger: c.log,
		}); err != nil {
			c.t.Fatal(err)
		}
		c.t.Cleanup(func() { runner.Close(context.Background()) })
		sandbox = runner
	}
	w, err := worker.New(worker.Config{
		Sandbox:   sandbox,
		ID:        id,
		PoolAddr:  c.poolAddrs[p],
		JoinToken: c.JoinToken,
		CA:        c.CA.CertPEM(),
		DataDir:   dir,
		// Scrub often, so damage is found within a test.
		ScrubInterval: time.Second,
		Labels:        c.opts.Labels(id),
		Logger:        c.log,
	})
	if err != nil {
		c.t.Fatal(err)
	}
	if err := c.opts.Setup(w); err != nil {
		c.t.Fatal(err)
	}
	if err := w.Start(context.Background(), "127.0.0.1:0"); err != nil {
		c.t.Fatal(err)
	}
	if len(c.workerPool) <= len(c.Workers) {
		c.workerPool = append(c.workerPool, p)
	}
	return w, runner
}

// KillWorker stops worker i as a crash would: no goodbye, calls dropped, its
// lease left to expire.
func (c *Cluster) KillWorker(i int) { c.Workers[i].Kill() }

// StopWorker stops worker i gracefully.
func (c *Cluster) StopWorker(i int) {
	ctx, cancel := context.WithTimeout(context.Background(), 10*time.Second)
	defer cancel()
	if err := c.Workers[i].Stop(ctx); err != nil {
		c.t.Errorf("stopping %s: %v", c.Workers[i].ID(), err)
	}
}

// Client returns a client of pool p with the admin token.
func (c *Cluster) Client(p int) *taskworker.Client {
	return c.ClientWithToken(p, c.AdminToken)
}

// ClientWithToken returns a client of pool p with the given token.
func (c *Cluster) ClientWithToken(p int, token string) *taskworker.Client {
	c.t.Helper()
	cl, err := taskworker.Dial(c.poolAddrs[p], taskworker.WithToken(token), taskworker.WithCA(c.CA.CertPEM()))
	if err != nil {
		c.t.Fatal(err)
	}
	c.t.Cleanup(func() { cl.Close() })
	return cl
}

// WaitWorkers waits until every running pool lists exactly n workers.
func (c *Cluster) WaitWorkers(n int) {
	c.t.Helper()
	c.waitFor(30*time.Second, fmt.Sprintf("%d workers listed", n), func() (bool, string) {
		for i := range c.Pools {
			got, err := c.Client(i).Workers(context.Background())
			if err != nil || len(got) != n {
				return false, fmt.Sprintf("pool %d lists %d workers (err %v)", i, len(got), err)
			}
		}
		return true, ""
	})
}

func (c *Cluster) waitFor(timeout time.Duration, what string, cond func() (bool, string)) {
	c.t.Helper()
	deadline := time.Now().Add(timeout)
	for {
		ok, state := cond()
		if ok {
			return
		}
		if time.Now().After(deadline) {
			c.t.Fatalf("after %s, still no %s: %s", timeout, what, state)
		}
		time.Sleep(20 * time.Millisecond)
	}
}

// CheckInvariants checks that every pool's view of the workers is etcd's,
// and that every stripe of every stored file can be reconstructed.
func (c *Cluster) CheckInvariants() error {
	if err := c.checkWorkerViews(); err != nil {
		return err
	}
	for _, p := range c.Pools {
		if p != nil && p.Running() {
			ctx, cancel := context.WithTimeout(context.Background(), time.Minute)
			defer cancel()
			return p.Files().Verify(ctx)
		}
	}
	return nil
}

func (c *Cluster) checkWorkerViews() error {
	cli, err := c.etcdClient()
	if err != nil {
		return err
	}
	defer cli.Close()
	var last error
	for range 100 { // views converge within a watch round trip
		last = nil
		resp, err := cli.Get(context.Background(), "/taskworker/workers/", clientv3.WithPrefix(), clientv3.WithKeysOnly())
		if err != nil {
			return err
		}
		var inEtcd []string
		for _, kv := range resp.Kvs {
			inEtcd = append(inEtcd, string(kv.Key[len("/taskworker/workers/"):]))
		}
		for i, p := range c.Pools {
			if p == nil || !p.Running() {
				continue
			}
			if got := p.WorkerIDs(); !slices.Equal(got, inEtcd) {
				last = fmt.Errorf("pool %d lists workers %v, etcd has %v", i, got, inEtcd)
			}
		}
		if last == nil {
			return nil
		}
		time.Sleep(20 * time.Millisecond)
	}
	return last
}

func (c *Cluster) shutdown() {
	if err := c.CheckInvariants(); err != nil {
		c.t.Errorf("cluster invariant: %v", err)
	}
	ctx, cancel := context.WithTimeout(context.Background(), 10*time.Second)
	defer cancel()
	for _, w := range c.Workers {
		w.Kill()
	}
	for _, p := range c.Pools {
		_ = p.Stop(ctx)
	}
}
