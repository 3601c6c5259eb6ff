package main

import (
	"context"
	"errors"
	"fmt"
	"os"
	"os/signal"
	"path/filepath"
	"strings"
	"syscall"
	"time"

	"github.com/spf13/cobra"

	"github.com/hivemind/taskworker/internal/deployed"
	"github.com/hivemind/taskworker/internal/examples"
	"github.com/hivemind/taskworker/internal/metrics"
	"github.com/hivemind/taskworker/internal/names"
	"github.com/hivemind/taskworker/internal/sandbox"
	"github.com/hivemind/taskworker/internal/starlarkrun"
	"github.com/hivemind/taskworker/internal/worker"
)

func workerCommand(e *env) *cobra.Command {
	var (
		cfg           worker.Config
		dcfg          deployed.Config
		joinTokenFile string
		withExamples  bool
		zone          string
		standalone    bool
		wasmInProcess bool
		caFile        string
		unconfined    bool
		metricsListen string
		otlp          string
	)
	cmd := &cobra.Command{
		Use:   "worker",
		Short: "Run a worker daemon that registers with a pool",
		Long: `Run a worker daemon. It enrols with the pool given by --pool once, paying with
the network's join token (--join-token-file): it makes its key, gets a
certificate naming its id, keeps both in its data directory and renews the
certificate before it expires. It then registers and serves the functions it
has (--examples registers hello, add, echo and sleep) to the pool alone, over
mTLS. It verifies the pool with the network's CA certificate (--ca).

Each of --pool, --ca and --join-token-file defaults to its environment variable
(TASKWORKER_POOL, TASKWORKER_CA, TASKWORKER_JOIN_TOKEN_FILE), else to the env
file of the running 'taskworker up': a worker started by hand beside it joins
with only --id.

Its data (file shards, compiled modules) goes to --data-dir, by default a
directory keyed by the pool's address and the worker's id, apart from those of
'taskworker up': a worker of one network never takes over another's shards.

With --standalone it registers with no pool, makes a throwaway CA and prints its
address and the directory holding a certificate to call it with, for
benchmarks.`,
		Args: cobra.NoArgs,
		RunE: func(cmd *cobra.Command, _ []string) error {
			cfg.Logger = e.logger()
			if zone != "" {
				if z, ok := cfg.Labels["zone"]; ok && z != zone {
					return fmt.Errorf("--zone %s and --label zone=%s disagree: give one", zone, z)
				}
				if cfg.Labels == nil {
					cfg.Labels = map[string]string{}
				}
				cfg.Labels["zone"] = zone
			}
			if standalone {
				cfg.PoolAddr = ""
			} else {
				cfg.PoolAddr = fromEnv(cfg.PoolAddr, "TASKWORKER_POOL")
				if cfg.PoolAddr == "" {
					return errors.New("no pool: pass --pool host:port (or --standalone)")
				}
				cfg.JoinToken = os.Getenv("TASKWORKER_JOIN_TOKEN")
				if cfg.JoinToken == "" {
					joinTokenFile = fromEnv(joinTokenFile, "TASKWORKER_JOIN_TOKEN_FILE")
				}
				if joinTokenFile != "" {
					tok, err := readSecretFile(joinTokenFile)
					if err != nil {
						return fmt.Errorf("--join-token-file: %w (a pool writes join.token into its data directory and logs the path when it starts)", err)
					}
					cfg.JoinToken = tok
				}
			}
			if err := probeListen(cfg.Listen); err != nil {
				if errors.Is(err, errAddrInUse) {
					return fmt.Errorf("%w: another process serves there (perhaps another worker); pass --listen with a free port, or 0.0.0.0:0 for any", err)
				}
				return fmt.Errorf("--listen %w", err)
			}
			if cfg.ID == "" {
				host, _ := os.Hostname()
				cfg.ID = "worker-" + host
			}
			// The id names a directory below: check it before any path is made of it.
			if err := names.WorkerID(cfg.ID); err != nil {
				return fmt.Errorf("--id: %w", err)
			}
			if cfg.DataDir == "" {
				cfg.DataDir = defaultWorkerDir(cfg.PoolAddr, cfg.ID)
			}
			if cfg.PoolAddr != "" && !cfg.Insecure {
				caFile = fromEnv(caFile, "TASKWORKER_CA")
				if caFile == "" {
					return errors.New("no CA certificate to verify the pool with: pass --ca with the network's ca.crt (in the pool's data directory), set TASKWORKER_CA, or --insecure if the pool runs with it")
				}
				ca, err := os.ReadFile(caFile)
				if err != nil {
					return fmt.Errorf("--ca: %w", err)
				}
				cfg.CA, cfg.CAName = ca, "the CA in "+caFile
			}
			octx, cancelObserve := context.WithCancel(cmd.Context())
			defer cancelObserve()
			o, done, err := observe(octx, "taskworker-worker", otlp, metricsListen, metrics.NewWorker, cfg.Logger)
			defer done()
			if err != nil {
				return err
			}
			cfg.Tracing, cfg.Metrics, cfg.Logger = o.Tracing, o.Metrics, o.Logger
			exe, err := os.Executable()
			if err != nil {
				return err
			}
			wasmCommand := []string{exe, sandbox.ChildArg}
			if wasmInProcess {
				wasmCommand = nil
			}
			dcfg.CacheDir = filepath.Join(cfg.DataDir, "wasm-cache")
			dcfg.StarlarkCommand = []string{exe, starlarkrun.ChildArg}
			dcfg.WasmCommand, dcfg.AllowUnconfined, dcfg.Logger = wasmCommand, unconfined, cfg.Logger
			if dcfg.StarlarkIdleAfter == 0 {
				dcfg.StarlarkIdleAfter = -1 // the flag's 0 is never; the Config's is the default
			}
			runner, err := deployed.New(cmd.Context(), dcfg)
			if err != nil {
				return err
			}
			defer runner.Close(context.Background())
			cfg.Sandbox = runner
			w, err := worker.New(cfg)
			if err != nil {
				return err
			}
			if withExamples {
				if err := examples.Register(w.Register); err != nil {
					return err
				}
			}
			ctx, stop := signal.NotifyContext(cmd.Context(), syscall.SIGINT, syscall.SIGTERM)
			defer stop()
			if err := w.Start(ctx, ""); err != nil {
				return err
			}
			if standalone {
				tlsDir := filepath.Join(cfg.DataDir, worker.StandaloneTLSDir)
				if cfg.Insecure {
					tlsDir = "none (--insecure)"
				}
				fmt.Fprintf(e.stdout, "TASKWORKER_WORKER=%s\nTASKWORKER_WORKER_TLS=%s\n", w.Addr(), tlsDir)
			}
			select {
			case <-ctx.Done():
			case <-w.Refused(): // its data directory belongs to another network
				w.Kill()
				return w.Err()
			}
			sctx, cancel := context.WithTimeout(context.Background(), cfg.DrainGrace+30*time.Second)
			defer cancel()
			return w.Stop(sctx)
		},
	}
	f := cmd.Flags()
	f.StringVar(&cfg.ID, "id", "", "worker id, unique in the network (default worker-HOSTNAME)")
	f.StringVar(&cfg.PoolAddr, "pool", "", "pool address host:port, or the addresses of several pool replicas separated by commas (default $TASKWORKER_POOL)")
	f.StringVar(&joinTokenFile, "join-token-file", "", "file holding the network's join token (the pool's join.token), for the first enrolment (default $TASKWORKER_JOIN_TOKEN_FILE)")
	f.StringVar(&caFile, "ca", "", "the network's CA certificate (the pool's ca.crt; default $TASKWORKER_CA)")
	f.BoolVar(&cfg.Insecure, "insecure", false, "no TLS, for a pool run with --insecure: any peer can call this worker; for a trusted host only")
	f.StringVar(&cfg.Listen, "listen", worker.DefaultListen, "address to serve on")
	f.StringVar(&cfg.Advertise, "advertise", "", "address the pool should dial, if not the listen address")
	f.StringToStringVar(&cfg.Labels, "label", nil, "labels, e.g. --label disk=ssd (repeatable)")
	f.StringVar(&zone, "zone", "", "failure domain (rack, host, availability zone): a file's shards are spread over zones")
	f.DurationVar(&cfg.DrainDelay, "drain-delay", 200*time.Millisecond, "on stop, keep serving this long after leaving the pool")
	f.DurationVar(&cfg.DrainGrace, "drain-grace", 30*time.Second, "on stop (SIGTERM), have the pool drain this worker first: its calls and tasks get this long, then its tasks are handed back to run elsewhere (0: leave at once)")
	f.StringVar(&cfg.DataDir, "data-dir", "", "directory for file shards and deployed modules (default $TASKWORKER_HOME/joined/POOL/ID)")
	f.Int64Var(&dcfg.MaxModuleMemory, "max-module-memory", deployed.DefaultMaxModuleMemory, "memory of the deployed versions kept loaded; beyond it the least recently used idle ones are unloaded (bytes)")
	f.DurationVar(&dcfg.ModuleIdleTimeout, "module-idle-timeout", deployed.DefaultModuleIdleTimeout, "unload a deployed version not called for this long (negative: never)")
	f.IntVar(&dcfg.MaxWasmCalls, "max-wasm-calls", deployed.DefaultMaxWasmCalls, "WebAssembly calls running at once, shared fairly between users")
	f.IntVar(&dcfg.MaxWasmCallsPerCaller, "max-wasm-calls-per-user", 0, "WebAssembly calls one user runs at once (0: all but one, at most one per CPU)")
	f.IntVar(&dcfg.MaxStarlarkChildren, "max-starlark-children", 0, "Starlark child processes (0: the runner's default)")
	f.IntVar(&dcfg.MaxStarlarkChildrenPerCaller, "max-starlark-children-per-user", 0, "Starlark children one user holds at once (0: all but one, at most one per CPU)")
	f.DurationVar(&dcfg.StarlarkIdleAfter, "starlark-idle-after", starlarkrun.DefaultConfig().IdleAfter, "while other users have calls on this worker, a Starlark call that computes longer than this runs in the idle CPU class, after their shorter calls (0: never)")
	f.BoolVar(&withExamples, "examples", false, "serve the example functions hello, add, echo and sleep")
	f.BoolVar(&standalone, "standalone", false, "do not register with a pool; print the address and the directory of a certificate to call it with")
	f.BoolVar(&wasmInProcess, "wasm-in-process", false, "run WebAssembly in the worker's process, stopped by deadline checks, instead of in supervised child processes")
	f.BoolVar(&unconfined, "allow-unconfined", false, "run function code even where its child processes cannot install their seccomp filter (default: they refuse and calls fail)")
	f.StringVar(&metricsListen, "metrics-listen", "", "serve Prometheus metrics (/metrics) on this address (off by default)")
	f.StringVar(&otlp, "otlp-endpoint", "", "export traces over OTLP/gRPC to this collector (host:port, or a URL; default $OTEL_EXPORTER_OTLP_ENDPOINT; off when neither)")
	return cmd
}

// defaultWorkerDir is a worker's data directory when --data-dir is not
// given: keyed by the pool it joins and its id, so that a worker of one
// network never opens the shards of a worker of another, nor those of
// 'taskworker up's workers (DIR/workers/ID).
func defaultWorkerDir(poolAddr, id string) string {
	if poolAddr == "" {
		poolAddr = "standalone"
	}
	return filepath.Join(homeDir(), "joined", strings.NewReplacer(":", "_", "/", "_", "[", "", "]", "").Replace(poolAddr), id)
}
