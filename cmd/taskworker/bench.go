package main

import (
	"bufio"
	"context"
	"crypto/sha256"
	"crypto/tls"
	"crypto/x509"
	"encoding/hex"
	"errors"
	"fmt"
	"os"
	"os/exec"
	"path/filepath"
	"slices"
	"strings"
	"sync"
	"syscall"
	"time"

	"github.com/spf13/cobra"
	"google.golang.org/grpc"
	"google.golang.org/grpc/codes"
	"google.golang.org/grpc/credentials"
	"google.golang.org/grpc/credentials/insecure"
	"google.golang.org/grpc/status"

	"github.com/hivemind/taskworker"
	v1 "github.com/hivemind/taskworker/api/taskworker/v1"
	"github.com/hivemind/taskworker/internal/bench"
	"github.com/hivemind/taskworker/internal/benchchart"
	"github.com/hivemind/taskworker/internal/localnet"
	"github.com/hivemind/taskworker/internal/pki"
	"github.com/hivemind/taskworker/internal/pool"
	"github.com/hivemind/taskworker/internal/rawio"
)

func benchCommand(e *env) *cobra.Command {
	cmd := &cobra.Command{
		Use:   "bench",
		Short: "Measure a running network",
	}
	var (
		cf                 clientFlags
		concurrency        []int
		duration, warmup   time.Duration
		function, argsJSON string
		versus             string
		noDirect           bool
		turns              int
		record             string
	)
	call := &cobra.Command{
		Use:   "call",
		Short: "Calls/s and latency of a function through the pool, against a direct single-hop baseline",
		Long: `Call a function through the pool at each concurrency for --duration, and in the
same run call the same function directly on a standalone worker process (one
gRPC hop, no pool) as the baseline; print both and their ratios. Both go over
TLS (the baseline with a certificate the worker makes for it), or both in
plaintext with --insecure (against a pool run with --insecure).

With --versus, the baseline is another function through the pool instead:
'--function add2 --versus add' compares a deployed function with a native
one on the same workers.

The two sides of a comparison take turns (--turns each, in the order a b b
a a b b a ...), so that a machine whose speed drifts during the run slows
both alike; each side's figures add up its turns.

Each run also prints the CPU time (user and system) each process spent per
call, read from /proc around the measured window: this client; the pool,
when it listens on this machine, and the processes below it (under
'taskworker up', its workers and their sandbox children); the baseline
worker. On a shared machine calls/s move with the load; CPU per call moves
much less, and shows which process a change made cheaper.`,
		Args: cobra.NoArgs,
		RunE: cf.run(func(cmd *cobra.Command, _ []string, c *taskworker.Client) error {
			ctx := cmd.Context()
			args := []byte(argsJSON)
			viaPool := func(ctx context.Context) error {
				_, err := c.CallJSON(ctx, function, args)
				return err
			}
			if err := viaPool(ctx); err != nil {
				return fmt.Errorf("a first call of %s through the pool failed: %w", function, err)
			}
			pool := bench.Target{Name: "pool", Call: viaPool, Meters: poolMeters(c.Pools())}
			var base *bench.Target
			switch {
			case versus != "":
				// Both through the pool: each side named by its function.
				pool.Name = function
				base = &bench.Target{Name: versus, Meters: pool.Meters, Call: func(ctx context.Context) error {
					_, err := c.CallJSON(ctx, versus, args)
					return err
				}}
				if err := base.Call(ctx); err != nil {
					return fmt.Errorf("a first call of %s through the pool failed: %w", versus, err)
				}
			case !noDirect:
				w, err := startStandaloneWorker(ctx, cf.insecure)
				if err != nil {
					return err
				}
				defer w.stop()
				base = &bench.Target{Name: "direct", Call: w.call(function, args), Meters: directMeters(w.cmd.Process.Pid)}
				if err := base.Call(ctx); err != nil {
					return fmt.Errorf("a first direct call of %s failed: %w", function, err)
				}
			}
			fmt.Fprintf(e.stdout, "function %s, args %s, %s per run after %s warm-up\n%s\n", function, argsJSON, duration, warmup, bench.Header)
			for _, n := range concurrency {
				if base == nil {
					p := bench.Run(ctx, pool.Name, n, warmup, duration, pool.Call, pool.Meters...)
					fmt.Fprintf(e.stdout, "%s\n%s\n", p, p.CPULine())
					if err := recordCalls(record, p); err != nil {
						return err
					}
					continue
				}
				p, d := bench.Compare(ctx, n, turns, warmup, duration, pool, *base)
				fmt.Fprintf(e.stdout, "%s\n%s\n", p, d)
				fmt.Fprintf(e.stdout, "%s/%s at concurrency %d: calls/s %.2fx, p50 %.2fx\n", p.Target, d.Target, n, p.Rate()/d.Rate(), float64(p.P50)/float64(d.P50))
				fmt.Fprintf(e.stdout, "%s\n%s\n", p.CPULine(), d.CPULine())
				if err := recordCalls(record, p, d); err != nil {
					return err
				}
				for _, r := range []bench.Result{p, d} {
					if r.FirstError != nil {
						fmt.Fprintf(e.stdout, "  %s: first error: %s\n", r.Target, oneLine(r.FirstError))
					}
				}
			}
			return nil
		}),
	}
	cf.register(call)
	f := call.Flags()
	f.IntSliceVar(&concurrency, "concurrency", []int{1, 64}, "concurrent callers (comma-separated list: one run each)")
	f.DurationVar(&duration, "duration", 5*time.Second, "measured time per run")
	f.DurationVar(&warmup, "warmup", time.Second, "unmeasured time before each run")
	f.StringVar(&function, "function", "add", "function to call (the baseline worker serves the examples)")
	f.StringVar(&argsJSON, "args", "[1, 2]", "arguments as a JSON array")
	f.BoolVar(&noDirect, "no-direct", false, "skip the direct baseline")
	f.StringVar(&versus, "versus", "", "compare with this function through the pool instead of the direct baseline")
	f.IntVar(&turns, "turns", 4, "turns each side of a comparison takes in a run")
	f.StringVar(&record, "record", "", "append each run to this JSON-lines file, for bench chart")
	cmd.AddCommand(call, benchChartCommand(e), benchFilesCommand(e), benchChaosCommand(e), benchFairCommand(e), benchTasksCommand(e), benchDNSCommand(e))
	return cmd
}

// poolMeters are what `bench call` reads the CPU per call of in a run
// through the pool: this process (the client), and the pool's process when
// it listens on this machine with the processes below it (under
// `taskworker up`, its workers and their sandbox children).
func poolMeters(poolAddrs []string) []bench.Meter {
	meters := []bench.Meter{bench.ThisProcess("client")}
	var pids []int
	for _, a := range poolAddrs {
		if pid, err := bench.ListeningPID(a); err == nil && pid != 0 && !slices.Contains(pids, pid) {
			pids = append(pids, pid)
		}
	}
	if len(pids) > 0 {
		meters = append(meters, bench.Process("pool", false, pids...), bench.Children("processes below it", pids...))
	}
	return meters
}

// directMeters are those of a direct run: the client, and the standalone
// worker with its children.
func directMeters(pid int) []bench.Meter {
	return []bench.Meter{bench.ThisProcess("client"), bench.Process("worker", true, pid)}
}

// standaloneWorker is a worker process of this binary, serving the examples
// with no pool, for the direct baseline.
type standaloneWorker struct {
	cmd  *exec.Cmd
	dir  string
	conn *grpc.ClientConn
}

func startStandaloneWorker(ctx context.Context, plaintext bool) (*standaloneWorker, error) {
	exe, err := os.Executable()
	if err != nil {
		return nil, err
	}
	dir, err := os.MkdirTemp("", "taskworker-bench-")
	if err != nil {
		return nil, err
	}
	cmd := exec.Command(exe, "worker", "--standalone", "--examples", "--id", "bench-baseline", "--listen", "127.0.0.1:0",
		"--data-dir", dir, "--log-level", "error")
	if plaintext {
		cmd.Args = append(cmd.Args, "--insecure")
	}
	cmd.SysProcAttr = &syscall.SysProcAttr{Pdeathsig: syscall.SIGKILL}
	out, err := cmd.StdoutPipe()
	if err != nil {
		return nil, err
	}
	cmd.Stderr = os.Stderr
	if err := cmd.Start(); err != nil {
		return nil, err
	}
	w := &standaloneWorker{cmd: cmd, dir: dir}
	vars := map[string]string{}
	sc := bufio.NewScanner(out)
	for len(vars) < 2 && sc.Scan() {
		if k, v, ok := strings.Cut(sc.Text(), "="); ok {
			vars[k] = v
		}
	}
	addr, tlsDir := vars["TASKWORKER_WORKER"], vars["TASKWORKER_WORKER_TLS"]
	if addr == "" || tlsDir == "" {
		w.stop()
		return nil, errors.New("the baseline worker did not print its address and certificate directory")
	}
	// The baseline is over TLS too (unless the pool is plaintext: --insecure),
	// calling as the worker's pool, with the certificate its throwaway CA
	// made for that.
	creds := insecure.NewCredentials()
	if !plaintext {
		if creds, err = standaloneCredentials(tlsDir); err != nil {
			w.stop()
			return nil, err
		}
	}
	w.conn, err = grpc.NewClient(addr, grpc.WithTransportCredentials(creds), grpc.WithContextDialer(rawio.Dial))
	if err != nil {
		w.stop()
		return nil, err
	}
	return w, nil
}

func (w *standaloneWorker) call(function string, args []byte) func(context.Context) error {
	rpc := v1.NewRPCServiceClient(w.conn)
	req := &v1.FunctionCallRequest{FunctionName: function, Args: args}
	return func(ctx context.Context) error {
		_, err := rpc.CallFunction(ctx, req)
		return err
	}
}

// standaloneCredentials calls a standalone worker as its pool, with the
// certificates it wrote to dir.
func standaloneCredentials(dir string) (credentials.TransportCredentials, error) {
	ca, err := pki.ReadCertFile(filepath.Join(dir, pki.CACertFile))
	if err != nil {
		return nil, err
	}
	cert, err := tls.LoadX509KeyPair(filepath.Join(dir, "pool.crt"), filepath.Join(dir, "pool.key"))
	if err != nil {
		return nil, err
	}
	if cert.Leaf, err = x509.ParseCertificate(cert.Certificate[0]); err != nil {
		return nil, err
	}
	roots := x509.NewCertPool()
	roots.AddCert(ca)
	h := &pki.Holder{}
	h.Set(cert)
	return credentials.NewTLS(pki.ClientConfig(pki.Verify{CA: roots, URI: pki.WorkerURI("standalone", "bench-baseline")}, h)), nil
}

func (w *standaloneWorker) stop() {
	if w.conn != nil {
		w.conn.Close()
	}
	_ = w.cmd.Process.Signal(syscall.SIGTERM)
	_ = w.cmd.Wait()
	os.RemoveAll(w.dir)
}

func benchFairCommand(e *env) *cobra.Command {
	var (
		flood            int
		duration, warmup time.Duration
		spin             time.Duration
		oneTenant        bool
	)
	cmd := &cobra.Command{
		Use:   "fair",
		Short: "Latency of one user's Starlark calls while another floods the worker with spinning calls",
		Long: `Start a standalone worker process, give it two Starlark functions (one user's
add, another user's endless loop), and call it directly as its pool would: bob's
add at concurrency 1, alone, then while eve keeps --flood calls of her loop
running (each until its time limit, --spin, then again). Print both runs and the
ratio of their p99 latencies. With --one-tenant both run as one user, as if
the worker shared its processes first come, first served.`,
		Args: cobra.NoArgs,
		RunE: func(cmd *cobra.Command, _ []string) error {
			ctx := cmd.Context()
			w, err := startStandaloneWorker(ctx, false)
			if err != nil {
				return err
			}
			defer w.stop()
			limits := &v1.Limits{TimeoutMs: spin.Milliseconds(), MemoryBytes: 64 << 20}
			add, err := w.deployStarlark("add", "bob", "def add(a, b):\n    return a + b\n", limits)
			if err != nil {
				return err
			}
			loop, err := w.deployStarlark("spin", "eve", "def spin():\n    while True:\n        pass\n", limits)
			if err != nil {
				return err
			}
			floodUser := "eve"
			if oneTenant {
				floodUser = "bob"
			}
			call := w.callDeployed(add, "bob", []byte("[1, 2]"))
			if err := call(ctx); err != nil {
				return fmt.Errorf("a first call of bob's add failed: %w", err)
			}
			var mu sync.Mutex
			ended := map[codes.Code]int{}
			spinCall := w.callDeployed(loop, floodUser, nil)
			r := bench.Fair(ctx, warmup, duration, call, flood, func(ctx context.Context) error {
				err := spinCall(ctx)
				mu.Lock()
				ended[status.Code(err)]++
				mu.Unlock()
				return err
			})
			fmt.Fprintf(e.stdout, "bob's add at concurrency 1, %s per run after %s warm-up; %s's flood: %d spinning calls of up to %s\n%s\n%s\n",
				duration, warmup, floodUser, flood, spin, bench.Header, r)
			mu.Lock()
			fmt.Fprintf(e.stdout, "the flood's calls ended (in all): %v\n", ended)
			mu.Unlock()
			for _, x := range []bench.Result{r.Alone, r.Flooded} {
				if x.FirstError != nil {
					fmt.Fprintf(e.stdout, "  %s: first error: %s\n", x.Target, oneLine(x.FirstError))
				}
			}
			return nil
		},
	}
	f := cmd.Flags()
	f.IntVar(&flood, "flood", 27, "spinning calls kept running at once")
	f.DurationVar(&spin, "spin", 2*time.Second, "time limit of each spinning call (and of bob's calls)")
	f.DurationVar(&duration, "duration", 10*time.Second, "measured time per run")
	f.DurationVar(&warmup, "warmup", 2*time.Second, "unmeasured time before each run")
	f.BoolVar(&oneTenant, "one-tenant", false, "flood as bob himself: no fair sharing between the two")
	return cmd
}

// deployStarlark puts a script in the standalone worker's module cache, as
// a worker keeps what it fetched from its pool, and returns its deployment.
func (w *standaloneWorker) deployStarlark(name, owner, script string, limits *v1.Limits) (*v1.Deployment, error) {
	sum := sha256.Sum256([]byte(script))
	sha := hex.EncodeToString(sum[:])
	dir := filepath.Join(w.dir, "modules")
	if err := os.MkdirAll(dir, 0o700); err != nil {
		return nil, err
	}
	if err := os.WriteFile(filepath.Join(dir, sha), []byte(script), 0o600); err != nil {
		return nil, err
	}
	return &v1.Deployment{Name: name, Version: 1, ModuleSha256: sha, Export: name, Runtime: v1.Runtime_RUNTIME_STARLARK, Owner: owner, Limits: limits}, nil
}

// callDeployed calls a deployed function on the standalone worker for user.
func (w *standaloneWorker) callDeployed(d *v1.Deployment, user string, args []byte) func(context.Context) error {
	rpc := v1.NewRPCServiceClient(w.conn)
	req := &v1.FunctionCallRequest{FunctionName: d.Name, Args: args, UserId: user, Deployment: d}
	return func(ctx context.Context) error {
		_, err := rpc.CallFunction(ctx, req)
		return err
	}
}

func benchFilesCommand(e *env) *cobra.Command {
	var (
		workers   int
		size      string
		smallSize int
		conc      int
		duration  time.Duration
		noRepair  bool
		dir       string
		record    string
		profile   string
	)
	cmd := &cobra.Command{
		Use:   "files",
		Short: "Storage throughput and repair time, on a local network of its own",
		Long: `Start a local network of its own (an in-process pool, --workers worker processes,
data under --dir), then measure: a sequential write with fsync on the same disk
(the baseline, like dd conv=fsync), a Push and a Get of --size, pushes per second
of small files, and the time to repair after a worker is SIGKILLed.`,
		Args: cobra.NoArgs,
		RunE: func(cmd *cobra.Command, _ []string) error {
			n, err := parseBytes(size)
			if err != nil {
				return fmt.Errorf("--size: %w", err)
			}
			exe, err := os.Executable()
			if err != nil {
				return err
			}
			if dir == "" {
				if dir, err = os.MkdirTemp("", "taskworker-bench-files-"); err != nil {
					return err
				}
				defer os.RemoveAll(dir)
			}
			lease := 2 * time.Second
			pcfg := pool.DefaultConfig("")
			pcfg.Files.RepairGrace = 0 // repair as soon as the lease expires
			net, err := localnet.Start(cmd.Context(), localnet.Config{
				Dir: dir, Workers: workers, Listen: "127.0.0.1:0", Executable: exe, LeaseTTL: lease, Pool: pcfg, Logger: e.logger(),
			})
			if err != nil {
				return err
			}
			defer net.Stop()
			c, err := taskworker.Dial(net.Env().Pool, taskworker.WithToken(net.Env().Token), taskworker.WithCAFile(net.Env().CA))
			if err != nil {
				return err
			}
			defer c.Close()
			fcfg := bench.FilesConfig{Size: n, SmallSize: smallSize, SmallConcurrency: conc, SmallDuration: duration,
				DiskDir: dir, LeaseTTL: lease, CPUProfile: profile}
			if !noRepair {
				fcfg.KillWorker = func() { net.KillWorker(0) }
			}
			var recordErr error
			if record != "" {
				fcfg.Record = func(series string, rate float64) {
					if err := benchchart.Append(record, benchchart.Point{Bench: "files", Series: series, X: float64(n), Rate: rate}); err != nil && recordErr == nil {
						recordErr = err
					}
				}
			}
			fmt.Fprintf(e.stdout, "%d workers, data in %s\n", workers, dir)
			if err := bench.Files(cmd.Context(), c, fcfg, e.stdout); err != nil {
				return err
			}
			return recordErr
		},
	}
	f := cmd.Flags()
	f.IntVar(&workers, "workers", 7, "worker processes (7 leaves room to repair 4+2 after one is lost)")
	f.StringVar(&size, "size", "1GiB", "size of the large file")
	f.StringVar(&record, "record", "", "append the push, get and disk figures to this JSON-lines file, for bench chart")
	f.IntVar(&smallSize, "small-size", 1024, "size of the small files, in bytes")
	f.IntVar(&conc, "concurrency", 16, "concurrent small pushes")
	f.DurationVar(&duration, "duration", 5*time.Second, "how long to push small files")
	f.BoolVar(&noRepair, "no-repair", false, "skip the repair measurement")
	f.StringVar(&dir, "dir", "", "directory for the network's data (default: a temporary one)")
	f.StringVar(&profile, "cpuprofile", "", "write a CPU profile of the pool, etcd and the client (one process) while the small files are pushed to this file")
	return cmd
}
