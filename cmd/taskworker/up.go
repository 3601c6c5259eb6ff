package main

import (
	"cmp"
	"fmt"
	"net"
	"os"
	"os/signal"
	"path/filepath"
	"sync"
	"syscall"

	"github.com/prometheus/client_golang/prometheus"
	"github.com/spf13/cobra"

	"github.com/hivemind/taskworker/internal/localnet"
	"github.com/hivemind/taskworker/internal/metrics"
	"github.com/hivemind/taskworker/internal/pool"
)

func upCommand(e *env) *cobra.Command {
	cfg := localnet.Config{Workers: 3, Listen: "127.0.0.1:50051", DNSListen: "127.0.0.1:0"}
	var (
		web           httpFlags
		metricsListen string
	)
	cmd := &cobra.Command{
		Use:   "up",
		Short: "Run a whole local network: embedded etcd, a pool and N workers on 127.0.0.1",
		Long: `Run a whole network on this machine: an embedded etcd and a node pool in this
process, and --workers worker processes serving the example functions and
keeping files. When every worker has registered afresh it prints
TASKWORKER_POOL and TASKWORKER_TOKEN (also written to DIR/env, where the other
commands find them). Ctrl-C stops everything.

The pool also answers standard DNS for the network's zone on a free port of
127.0.0.1, printed as TASKWORKER_DNS: 'dig @127.0.0.1 -p PORT
add.fn.taskworker.internal' gives the pools that serve add. --dns-listen ""
turns it off.

The live dashboard is served on a free port of 127.0.0.1 (--http-listen); the
URL printed at start signs in as the admin (the token is in the URL's
fragment, which browsers never send).

The workers share the machine's CPUs: each runs its Go code on an equal
share of them (--worker-cpus), as several processes that each took every CPU
would spend their time waking threads that find nothing to do.

If the default address 127.0.0.1:50051 is taken, the pool listens on a free
port instead and prints it; an address given with --listen must be free. One
network runs in a directory at a time: a second one needs another --dir, and
its clients TASKWORKER_HOME=DIR (or --pool and --token).`,
		Example: `  taskworker up
  taskworker up --workers 6
  taskworker up --dir /tmp/net2    # a second network beside the first, on a free port
  TASKWORKER_HOME=/tmp/net2 taskworker call add 1 2`,
		Args: cobra.NoArgs,
		RunE: func(cmd *cobra.Command, _ []string) error {
			exe, err := os.Executable()
			if err != nil {
				return err
			}
			if cfg.Dir == "" {
				cfg.Dir = homeDir()
			}
			cfg.AnyPortIfBusy = !cmd.Flags().Changed("listen")
			cfg.Executable = exe
			cfg.Logger = e.logger()
			cfg.WorkerOutput = e.stderr
			ctx, stop := signal.NotifyContext(cmd.Context(), syscall.SIGINT, syscall.SIGTERM)
			defer stop()
			var m *metrics.Metrics
			var workerMetrics []any // id, URL: the workers' /metrics
			if metricsListen != "" {
				m = metrics.New()
				cfg.Pool = pool.DefaultConfig("")
				cfg.Pool.Metrics = m
				// Each worker serves its own, on a port chosen for the run,
				// so that it keeps its address when restarted; if another
				// process took the port meanwhile, on a new one (the worker
				// logs the address it serves on).
				var mu sync.Mutex
				addrs := map[string]string{}
				for i := range cfg.Workers {
					id := fmt.Sprintf("%s%03d", cmp.Or(cfg.WorkerPrefix, "worker_"), i+1)
					addr, err := freeLoopbackAddr()
					if err != nil {
						return fmt.Errorf("a port for %s's metrics: %w", id, err)
					}
					addrs[id] = addr
					workerMetrics = append(workerMetrics, id, "http://"+addr+"/metrics")
				}
				cfg.WorkerArgs = func(id string) []string {
					mu.Lock()
					defer mu.Unlock()
					if !loopbackAddrFree(addrs[id]) {
						if addr, err := freeLoopbackAddr(); err == nil {
							addrs[id] = addr
						}
					}
					return []string{"--metrics-listen", addrs[id]}
				}
			}
			n, err := localnet.Start(ctx, cfg)
			if err != nil {
				return err
			}
			defer n.Stop()
			cfg.Logger.Info("network ready; in another shell: taskworker call add 1 2", "workers", cfg.Workers,
				"pool", n.Env().Pool, "env_file", filepath.Join(cfg.Dir, localnet.EnvFile))
			if dns := n.Env().DNS; dns != "" {
				host, port, _ := net.SplitHostPort(dns)
				cfg.Logger.Info("DNS for the network's zone: dig @"+host+" -p "+port+" add.fn.taskworker.internal", "dns", dns)
			}
			var g prometheus.Gatherer
			if m != nil {
				addr, err := m.Serve(ctx, metricsListen)
				if err != nil {
					return fmt.Errorf("--metrics-listen: %w", err)
				}
				cfg.Logger.Info("the pool's metrics: http://" + addr.String() + "/metrics")
				cfg.Logger.Info("the workers' metrics", workerMetrics...)
				g = m.Registry
			}
			if web.listen != "" {
				site, err := serveDashboard(ctx, web, n.Env().Pool, n.Env().CA, g, cfg.Logger)
				if err != nil {
					return err
				}
				// The token rides in the fragment, which a browser never
				// sends: the page moves it to its session storage.
				cfg.Logger.Info("dashboard (signed in as admin): open " + site.url + "#token=" + n.Env().Token)
			}
			_, _ = e.stdout.Write([]byte(n.Env().String()))
			<-ctx.Done()
			return nil
		},
	}
	f := cmd.Flags()
	f.StringVar(&cfg.Dir, "dir", "", "directory for the network's data and env file (default $TASKWORKER_HOME, else ~/.taskworker)")
	f.IntVar(&cfg.Workers, "workers", cfg.Workers, "number of worker processes")
	f.IntVar(&cfg.WorkerProcs, "worker-cpus", 0, "CPUs each worker's Go code may run on at once (its GOMAXPROCS); 0: an equal share of this machine's, at least 1, or GOMAXPROCS if set")
	f.StringVar(&cfg.WorkerPrefix, "worker-prefix", "worker_", "the workers' ids: this and a number (worker_001, ...)")
	f.StringVar(&cfg.Listen, "listen", cfg.Listen, "the pool's address; when the default is taken, a free port on 127.0.0.1")
	f.StringVar(&cfg.DNSListen, "dns-listen", cfg.DNSListen, "where the pool answers DNS for the network's zone (UDP and TCP; \"\" for none)")
	f.DurationVar(&cfg.LeaseTTL, "lease-ttl", 0, "workers' lease TTL (default: the pool's)")
	web.register(f, "127.0.0.1:0")
	f.StringVar(&metricsListen, "metrics-listen", "127.0.0.1:0", "serve the pool's Prometheus metrics (/metrics) here, and each worker's on a free port of 127.0.0.1 (\"\" for none)")
	return cmd
}

// freeLoopbackAddr returns a port of 127.0.0.1 free now.
func freeLoopbackAddr() (string, error) {
	l, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		return "", err
	}
	defer l.Close()
	return l.Addr().String(), nil
}

// loopbackAddrFree reports whether addr can be listened on now.
func loopbackAddrFree(addr string) bool {
	l, err := net.Listen("tcp", addr)
	if err != nil {
		return false
	}
	l.Close()
	return true
}
