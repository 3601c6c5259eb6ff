package localnet

import (
	"bufio"
	"context"
	"errors"
	"fmt"
	"io"
	"log/slog"
	"net"
	"os"
	"os/exec"
	"path/filepath"
	"runtime"
	"slices"
	"strings"
	"sync"
	"syscall"
	"time"

	"github.com/hivemind/taskworker"
	v1 "github.com/hivemind/taskworker/api/taskworker/v1"
	"github.com/hivemind/taskworker/internal/atomicfile"
	"github.com/hivemind/taskworker/internal/deployed"
	"github.com/hivemind/taskworker/internal/names"
	"github.com/hivemind/taskworker/internal/pool"
	"github.com/hivemind/taskworker/internal/sandbox"
)

// Config configures a local network.
type Config struct {
	// Dir holds everything: pool/ (etcd, tokens), workers/, and env.
	Dir string
	// Workers is how many worker processes to run, named WorkerPrefix and
	// a number: worker_001, worker_002...
	Workers      int
	WorkerPrefix string
	// Listen is the pool's address.
	Listen string
	// AnyPortIfBusy makes the pool listen on a free port of Listen's host
	// when Listen is in use, instead of failing (Env says which port).
	AnyPortIfBusy bool
	// Executable is the taskworker binary to run workers with.
	Executable string
	// LeaseTTL of the workers' registrations.
	LeaseTTL time.Duration
	// DNSListen, when set, is where the pool answers standard DNS for the
	// network's zone (port 0 picks one; Env says which).
	DNSListen string
	// WorkerOutput receives the workers' logs, each line prefixed with its id.
	WorkerOutput io.Writer
	// WorkerProcs is each worker process's GOMAXPROCS: how many of the
	// machine's CPUs its Go code runs on at once. Zero: the CPUs this
	// process may use, shared among the workers (WorkerShare), unless
	// GOMAXPROCS is set in the environment, which the workers then inherit.
	WorkerProcs int
	// WorkerArgs, when set, gives each worker's extra flags, by id. It is
	// called before every start of the worker's process (a restart too),
	// from the worker's own goroutine: concurrently for different workers.
	WorkerArgs func(id string) []string
	// Pool configures the pool (its DataDir, Listen, LeaseTTL and Logger are
	// set from the fields above); zero: pool.DefaultConfig.
	Pool   pool.Config
	Logger *slog.Logger
}

// Validate reports a configuration that cannot work, saying what to change.
func (c Config) Validate() error {
	if c.Dir == "" {
		return errors.New("no directory for the network: pass --dir")
	}
	if c.Workers < 1 || c.Workers > 64 {
		return fmt.Errorf("--workers %d: run 1 to 64 workers", c.Workers)
	}
	if c.WorkerPrefix != "" {
		if err := names.WorkerID(c.WorkerPrefix + "001"); err != nil {
			return fmt.Errorf("--worker-prefix %q: %w", c.WorkerPrefix, err)
		}
	}
	if c.Executable == "" {
		return errors.New("no taskworker executable to run workers with")
	}
	if c.WorkerProcs < 0 {
		return fmt.Errorf("--worker-cpus %d: give each worker at least 1 CPU, or 0 for a share of the machine's", c.WorkerProcs)
	}
	return nil
}

// WorkerShare is the GOMAXPROCS each of n worker processes gets on a
// machine whose CPUs this process may use are cpus: an equal share, rounded
// up so that the workers together can use every CPU, and at least one.
//
// Several Go processes that each take every CPU as their own each keep a
// thread per CPU looking for work: a goroutine made runnable wakes an idle
// one, which finds nothing (another process has the CPU) and sleeps again.
// On a machine of two CPUs running three workers beside the pool, that was
// a fifth of a worker's CPU (docs/RATIONALE.md, "Why does each
// worker of `up` get a share of the CPUs?").
func WorkerShare(cpus, n int) int {
	return max(1, (cpus+n-1)/max(1, n))
}

// workerEnv is the environment of the worker processes: this process's,
// with GOMAXPROCS set to the configured share unless the environment set it.
func (c Config) workerEnv() []string {
	procs := c.WorkerProcs
	if procs == 0 {
		if os.Getenv("GOMAXPROCS") != "" {
			return nil // inherited
		}
		procs = WorkerShare(runtime.GOMAXPROCS(0), c.Workers)
	}
	return append(os.Environ(), fmt.Sprintf("GOMAXPROCS=%d", procs))
}

// Env is what a client, or a worker started by hand, needs to use the
// network.
type Env struct {
	Pool  string
	Token string
	// CA is the file holding the network's CA certificate (CAFile in Dir).
	CA string
	// JoinTokenFile is the pool's join token file, for workers.
	JoinTokenFile string
	// DNS is the pool's standard DNS listener (host:port), if it has one.
	DNS string
}

// String renders the env file's lines.
func (e Env) String() string {
	s := fmt.Sprintf("TASKWORKER_POOL=%s\nTASKWORKER_TOKEN=%s\nTASKWORKER_CA=%s\n", e.Pool, e.Token, e.CA)
	if e.DNS != "" {
		s += "TASKWORKER_DNS=" + e.DNS + "\n"
	}
	// The join token file comes last: readers may stop at it.
	return s + "TASKWORKER_JOIN_TOKEN_FILE=" + e.JoinTokenFile + "\n"
}

// CAFile is the file in Dir where Start writes the network's CA
// certificate, beside the env file.
const CAFile = "ca.crt"

// EnvFile is the file in Dir where Start writes the Env while the network
// runs.
const EnvFile = "env"

// lockFile in Dir is held (flock) while a network runs in Dir, so that a
// second network never shares its etcd, tokens or workers' shards. The
// kernel releases it when the process dies, even by SIGKILL.
const lockFile = "lock"

// ErrDirInUse means another running network holds the directory.
var ErrDirInUse = errors.New("another local network is running in this directory")

// ErrListenInUse means the pool's address is taken and AnyPortIfBusy is off.
var ErrListenInUse = errors.New("the pool's address is in use")

// Network is a running local network.
type Network struct {
	cfg     Config
	log     *slog.Logger
	pool    *pool.Server
	checker *deployed.Checker
	env     Env
	workers []*supervised
	lock    *os.File
	stop    context.CancelFunc
	wg      sync.WaitGroup
}

// Start starts the network and returns once every worker has registered
// and the env file is written.
func Start(ctx context.Context, c Config) (_ *Network, err error) {
	if err := c.Validate(); err != nil {
		return nil, err
	}
	n := &Network{cfg: c, log: c.Logger}
	if n.log == nil {
		n.log = slog.New(slog.DiscardHandler)
	}
	if err := os.MkdirAll(c.Dir, 0o700); err != nil {
		return nil, err
	}
	if n.lock, err = lockDir(c.Dir); err != nil {
		return nil, err
	}
	defer func() {
		if err != nil && n.pool == nil {
			n.lock.Close()
		}
	}()
	// An env file here is a dead run's (we hold the lock): clients must not
	// find it before this run is ready.
	if err := os.Remove(filepath.Join(c.Dir, EnvFile)); err != nil && !errors.Is(err, os.ErrNotExist) {
		return nil, err
	}
	// Check the address before anything is written: a start that fails
	// here leaves no tokens or etcd data behind.
	if c.Listen, err = checkListen(c.Listen, c.AnyPortIfBusy, n.log); err != nil {
		return nil, err
	}
	pcfg := c.Pool
	if pcfg.Prefix == "" { // unset
		pcfg = pool.DefaultConfig("")
	}
	pcfg.DataDir = filepath.Join(c.Dir, "pool")
	pcfg.Listen = c.Listen
	pcfg.Logger = n.log
	if c.DNSListen != "" {
		pcfg.DNSListen = c.DNSListen
	}
	if c.LeaseTTL > 0 {
		pcfg.LeaseTTL = c.LeaseTTL
	}
	if pcfg.Checker == nil {
		checker, err := deployed.NewChecker(ctx, filepath.Join(c.Dir, "pool", "wasm-cache"), []string{c.Executable, sandbox.ChildArg})
		if err != nil {
			return nil, err
		}
		n.checker = checker
		pcfg.Checker = checker
	}
	p, err := pool.New(pcfg)
	if err != nil {
		return nil, err
	}
	if err := p.Start(ctx); err != nil {
		return nil, err
	}
	n.pool = p
	defer func() {
		if err != nil {
			n.Stop()
		}
	}()
	caFile := filepath.Join(c.Dir, CAFile)
	if err := atomicfile.Write(caFile, p.CACertPEM(), 0o644); err != nil {
		return nil, err
	}
	wctx, stop := context.WithCancel(context.Background())
	n.stop = stop
	out := c.WorkerOutput
	if out == nil {
		out = io.Discard
	}
	var outMu sync.Mutex
	// Registrations older than this are a dead run's, left in etcd with
	// their leases (a restart of etcd renews every lease): only workers
	// that registered after it count as ready.
	started := time.Now()
	env := c.workerEnv()
	for i := range c.Workers {
		prefix := c.WorkerPrefix
		if prefix == "" {
			prefix = "worker_"
		}
		id := fmt.Sprintf("%s%03d", prefix, i+1)
		w := &supervised{id: id, exe: c.Executable, env: env, log: n.log, out: &lockedWriter{w: out, mu: &outMu},
			args: []string{"worker", "--id", id, "--pool", n.pool.Addr(), "--listen", "127.0.0.1:0", "--examples",
				"--data-dir", filepath.Join(c.Dir, "workers", id),
				"--join-token-file", filepath.Join(pcfg.DataDir, pool.JoinTokenFile), "--ca", caFile}}
		if c.WorkerArgs != nil {
			w.extra = func() []string { return c.WorkerArgs(id) }
		}
		n.workers = append(n.workers, w)
		n.wg.Go(func() { w.run(wctx) })
	}

	n.env = Env{Pool: n.pool.Addr(), Token: n.pool.AdminToken(), CA: caFile, JoinTokenFile: filepath.Join(pcfg.DataDir, pool.JoinTokenFile)}
	if a := n.pool.DNSAddr(); a.IsValid() {
		n.env.DNS = a.String()
	}
	if err := n.waitRegistered(ctx, started); err != nil {
		return nil, err
	}
	if err := os.WriteFile(filepath.Join(c.Dir, EnvFile), []byte(n.env.String()), 0o600); err != nil {
		return nil, err
	}
	return n, nil
}

// waitRegistered waits until every worker of this run has registered with
// the pool since started, asking the pool as a client would.
func (n *Network) waitRegistered(ctx context.Context, started time.Time) error {
	c, err := taskworker.Dial(n.env.Pool, taskworker.WithToken(n.env.Token), taskworker.WithCAFile(n.env.CA))
	if err != nil {
		return err
	}
	defer c.Close()
	tick := time.NewTicker(50 * time.Millisecond)
	defer tick.Stop()
	timeout := time.After(60 * time.Second)
	fresh := 0
	for {
		lctx, cancel := context.WithTimeout(ctx, 5*time.Second)
		listed, err := c.Workers(lctx)
		cancel()
		if err == nil {
			fresh = countFresh(listed, n.workers, started)
			if fresh == len(n.workers) {
				return nil
			}
		}
		select {
		case <-ctx.Done():
			return ctx.Err()
		case <-timeout:
			return fmt.Errorf("only %d of %d workers registered within a minute; see their logs", fresh, len(n.workers))
		case <-tick.C:
		}
	}
}

// countFresh counts the workers of ours that registered at or after
// started (milliseconds are the registry's resolution).
func countFresh(listed []*v1.WorkerInfo, ours []*supervised, started time.Time) int {
	at := map[string]int64{}
	for _, w := range listed {
		at[w.WorkerId] = w.RegisteredAtMs
	}
	fresh := 0
	for _, w := range ours {
		if ms, ok := at[w.id]; ok && ms >= started.UnixMilli() {
			fresh++
		}
	}
	return fresh
}

// lockDir takes the directory's lock file, or says which network holds it.
func lockDir(dir string) (*os.File, error) {
	f, err := os.OpenFile(filepath.Join(dir, lockFile), os.O_RDWR|os.O_CREATE, 0o600)
	if err != nil {
		return nil, err
	}
	if err := syscall.Flock(int(f.Fd()), syscall.LOCK_EX|syscall.LOCK_NB); err != nil {
		f.Close()
		if errors.Is(err, syscall.EWOULDBLOCK) {
			where := ""
			if env, rerr := os.ReadFile(filepath.Join(dir, EnvFile)); rerr == nil {
				for line := range strings.Lines(string(env)) {
					if pool, ok := strings.CutPrefix(strings.TrimSpace(line), "TASKWORKER_POOL="); ok && len(pool) < 100 {
						where = ", its pool at " + pool
					}
				}
			}
			return nil, fmt.Errorf("%w: %s%s; use that network, stop it, or run a second one with another --dir", ErrDirInUse, dir, where)
		}
		return nil, fmt.Errorf("locking %s: %w", dir, err)
	}
	return f, nil
}

// checkListen returns the address the pool can listen on: addr when it is
// free, else a free port on addr's host when anyPort is set.
func checkListen(addr string, anyPort bool, log *slog.Logger) (string, error) {
	l, err := net.Listen("tcp", addr)
	if err == nil {
		return addr, l.Close()
	}
	if !errors.Is(err, syscall.EADDRINUSE) {
		return "", fmt.Errorf("--listen %s: %w", addr, err)
	}
	if !anyPort {
		return "", fmt.Errorf("%w: %s is taken by another process (another network?); pass --listen with a free port, or 127.0.0.1:0 for any", ErrListenInUse, addr)
	}
	host, _, _ := net.SplitHostPort(addr)
	log.Warn("the default address is in use; the pool listens on a free port instead (pass --listen to choose one)", "in_use", addr)
	return net.JoinHostPort(host, "0"), nil
}

// Env returns what a client needs to use the network.
func (n *Network) Env() Env { return n.env }

// Pool returns the network's pool.
func (n *Network) Pool() *pool.Server { return n.pool }

// KillWorker kills worker i (SIGKILL) and does not restart it: a machine
// lost.
func (n *Network) KillWorker(i int) { n.workers[i].kill() }

// Stop stops the workers (SIGTERM, then SIGKILL after 10s), drains the
// pool and removes the env file.
func (n *Network) Stop() {
	n.log.Info("stopping the network")
	if n.stop != nil {
		n.stop()
	}
	n.wg.Wait()
	ctx, cancel := context.WithTimeout(context.Background(), 15*time.Second)
	defer cancel()
	_ = n.pool.Stop(ctx)
	if n.checker != nil {
		_ = n.checker.Close(ctx)
	}
	os.Remove(filepath.Join(n.cfg.Dir, EnvFile))
	n.lock.Close()
}

// supervised is a worker process, restarted when it exits unless killed.
type supervised struct {
	id, exe string
	args    []string
	env     []string        // the process's environment; nil: this one's
	extra   func() []string // more args, asked for at each start; may be nil
	log     *slog.Logger
	out     io.Writer

	mu     sync.Mutex
	cmd    *exec.Cmd
	killed bool
}

func (w *supervised) kill() {
	w.mu.Lock()
	defer w.mu.Unlock()
	w.killed = true
	if w.cmd != nil {
		_ = w.cmd.Process.Kill()
	}
}

// run runs the worker process, restarting it when it exits, until ctx
// ends; then it asks it to stop (SIGTERM) and kills it if it does not.
func (w *supervised) run(ctx context.Context) {
	for ctx.Err() == nil {
		args := w.args
		if w.extra != nil {
			args = append(slices.Clip(args), w.extra()...)
		}
		cmd := exec.Command(w.exe, args...)
		cmd.Env = w.env
		cmd.Stdout = prefixWriter(w.out, w.id)
		cmd.Stderr = cmd.Stdout
		cmd.SysProcAttr = &syscall.SysProcAttr{Pdeathsig: syscall.SIGKILL}
		w.mu.Lock()
		if w.killed {
			w.mu.Unlock()
			return
		}
		err := cmd.Start()
		w.cmd = cmd
		w.mu.Unlock()
		if err != nil {
			w.log.Error("starting worker", "worker", w.id, "err", err)
			return
		}
		exited := make(chan error, 1)
		go func() { exited <- cmd.Wait() }()
		select {
		case err := <-exited:
			w.mu.Lock()
			killed := w.killed
			w.mu.Unlock()
			if killed {
				return
			}
			w.log.Warn("worker exited; restarting it", "worker", w.id, "err", err)
			select {
			case <-ctx.Done():
			case <-time.After(time.Second):
			}
		case <-ctx.Done():
			_ = cmd.Process.Signal(syscall.SIGTERM)
			select {
			case <-exited:
			case <-time.After(10 * time.Second):
				_ = cmd.Process.Kill()
				<-exited
			}
		}
	}
}

type lockedWriter struct {
	w  io.Writer
	mu *sync.Mutex
}

func (l *lockedWriter) Write(p []byte) (int, error) {
	l.mu.Lock()
	defer l.mu.Unlock()
	return l.w.Write(p)
}

// prefixWriter returns a writer that copies lines to out, each prefixed with
// [id].
func prefixWriter(out io.Writer, id string) io.Writer {
	r, w := io.Pipe()
	go func() {
		sc := bufio.NewScanner(r)
		sc.Buffer(make([]byte, 64<<10), 1<<20)
		for sc.Scan() {
			fmt.Fprintf(out, "[%s] %s\n", id, strings.TrimRight(sc.Text(), "\r"))
		}
		_, _ = io.Copy(io.Discard, r)
	}()
	return w
}
