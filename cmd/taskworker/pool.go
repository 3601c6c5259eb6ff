package main

import (
	"cmp"
	"context"
	"errors"
	"fmt"
	"net"
	"net/netip"
	"os"
	"os/signal"
	"path/filepath"
	"strings"
	"syscall"
	"time"

	"github.com/prometheus/client_golang/prometheus"
	"github.com/spf13/cobra"

	"github.com/hivemind/taskworker/internal/deployed"
	"github.com/hivemind/taskworker/internal/metrics"
	"github.com/hivemind/taskworker/internal/pki"
	"github.com/hivemind/taskworker/internal/pool"
	"github.com/hivemind/taskworker/internal/sandbox"
	"github.com/hivemind/taskworker/internal/tracing"
)

func poolCommand(e *env) *cobra.Command {
	// The data directory defaults to one per port, never that of 'up's
	// pool (DIR/pool): two pools must not share an etcd or tokens.
	cfg := pool.DefaultConfig("")
	var (
		allowNets     []string
		web           httpFlags
		metricsListen string
		otlp          string
	)
	cmd := &cobra.Command{
		Use:   "pool",
		Short: "Run a node pool (with an embedded etcd unless --etcd-endpoints is given)",
		Long: `Run a node pool: the front door of a network. It authenticates callers, routes
function calls to workers and keeps the network's state in etcd. On first start
it writes admin.token (for clients: the admin's API token) and join.token (for
workers: --join-token-file) to its data directory, and prints both paths.

It serves TLS with a certificate from the network's CA: made on first start in
the data directory (ca.crt, which clients and workers need as --ca; ca.key,
which never leaves it), or the operator's (--ca-cert, --ca-key). Every replica
of a network needs the same CA: start the others with --ca-cert and --ca-key
pointing at copies of the first one's files. Workers get a certificate naming
their id (enrolment, paid with a join token) and talk to the pool over mTLS.
The embedded etcd serves only the pool's certificate, on loopback. With
--insecure everything is plaintext, for a trusted host only.`,
		Example: `  taskworker pool --listen 0.0.0.0:7051
  taskworker pool --listen 10.0.0.5:7051 --data-dir /srv/taskworker/pool
  taskworker pool --listen 0.0.0.0:7051 --etcd-endpoints 10.0.0.2:2379,10.0.0.3:2379`,
		Args: cobra.NoArgs,
		RunE: func(cmd *cobra.Command, _ []string) error {
			cfg.Logger = e.logger()
			if err := probeListen(cfg.Listen); err != nil {
				if errors.Is(err, errAddrInUse) {
					return fmt.Errorf("%w: another process serves there (perhaps 'taskworker up', or another pool); pass --listen with a free port", err)
				}
				return fmt.Errorf("--listen %w", err)
			}
			if cfg.DataDir == "" {
				cfg.DataDir = defaultPoolDir(cfg.Listen)
			}
			for _, n := range allowNets {
				p, err := netip.ParsePrefix(n)
				if err != nil {
					return fmt.Errorf("--egress-allow-net %q: %v; give a network as address/length, e.g. 10.1.2.0/24", n, err)
				}
				cfg.EgressAllowNets = append(cfg.EgressAllowNets, p)
			}
			ctx, stop := signal.NotifyContext(cmd.Context(), syscall.SIGINT, syscall.SIGTERM)
			defer stop()
			o, done, err := observe(ctx, "taskworker-pool", otlp, metricsListen, metrics.New, cfg.Logger)
			defer done()
			if err != nil {
				return err
			}
			cfg.Tracing, cfg.Metrics, cfg.Logger = o.Tracing, o.Metrics, o.Logger
			return runPool(ctx, e, cfg, web)
		},
	}
	f := cmd.Flags()
	f.StringVar(&cfg.Listen, "listen", cfg.Listen, "address to serve gRPC on")
	f.StringVar(&cfg.DataDir, "data-dir", "", "directory for the embedded etcd and the bootstrap tokens (default $TASKWORKER_HOME/pool-PORT)")
	f.StringSliceVar(&cfg.EtcdEndpoints, "etcd-endpoints", nil, "use this etcd cluster instead of an embedded one (comma-separated)")
	f.StringVar(&cfg.EtcdCA, "etcd-ca", "", "with --etcd-endpoints: the CA certificate that signed etcd's")
	f.StringVar(&cfg.EtcdCert, "etcd-cert", "", "with --etcd-endpoints: the pool's client certificate for etcd")
	f.StringVar(&cfg.EtcdKey, "etcd-key", "", "with --etcd-endpoints: the key of --etcd-cert")
	f.StringVar(&cfg.CACert, "ca-cert", "", "the network's CA certificate (default: ca.crt in the data directory, made on first start)")
	f.StringVar(&cfg.CAKey, "ca-key", "", "the key of --ca-cert")
	f.StringVar(&cfg.KeyFile, "key-file", "", "the master keys that wrap files' and secrets' data keys (default: master.keys in the data directory, made on first start; every replica needs the same)")
	f.StringSliceVar(&cfg.TLSHosts, "tls-san", nil, "extra names and addresses for the pool's certificate, for clients that dial it by them (comma-separated)")
	f.DurationVar(&cfg.WorkerCertTTL, "worker-cert-ttl", 24*time.Hour, "lifetime of workers' certificates (renewed at two thirds)")
	f.BoolVar(&cfg.Insecure, "insecure", false, "serve plaintext with no certificates; workers join by the join token alone: for a trusted host only")
	f.DurationVar(&cfg.LeaseTTL, "lease-ttl", cfg.LeaseTTL, "how long a silent worker stays listed, and a stopped pool replica's tasks stay claimed")
	f.DurationVar(&cfg.TaskRetention, "task-retention", cfg.TaskRetention, "how long an ended task and its result are kept (and an idempotency key names it)")
	f.IntVar(&cfg.MaxArgsBytes, "max-call-bytes", cfg.MaxArgsBytes, "largest accepted call arguments, in bytes")
	f.DurationVar(&cfg.Files.RepairGrace, "repair-grace", cfg.Files.RepairGrace, "how long a lost worker's shards wait before they are rebuilt elsewhere")
	f.IntVar(&cfg.Files.BlockSize, "block-size", cfg.Files.BlockSize, "size of the blocks files are erasure-coded in, in bytes")
	f.DurationVar(&cfg.Files.GCMinAge, "gc-min-age", cfg.Files.GCMinAge, "age at which shards no file refers to are deleted")
	f.StringVar(&cfg.DNSListen, "dns-listen", "", "serve standard DNS (UDP and TCP) for the network's zone on this address (off by default)")
	f.StringVar(&cfg.DNS.Zone, "dns-zone", cfg.DNS.Zone, "the network's own DNS zone: FUNCTION.ZONE names the pools serving a function")
	f.StringSliceVar(&cfg.DNS.Upstreams, "dns-upstream", nil, "resolvers (host:port) the pool asks for other names (default: the system's, from /etc/resolv.conf)")
	web.register(f, "")
	f.StringVar(&otlp, "otlp-endpoint", "", "export traces over OTLP/gRPC to this collector (host:port, or a URL; default $OTEL_EXPORTER_OTLP_ENDPOINT; off when neither)")
	f.StringVar(&metricsListen, "metrics-listen", "", "serve Prometheus metrics (/metrics) on this address (off by default)")
	f.StringSliceVar(&allowNets, "egress-allow-net", nil, "networks (address/length) that DNS answers and outbound requests may reach although private or local")
	return cmd
}

// defaultPoolDir is a pool's data directory when --data-dir is not given:
// keyed by the listen port, so pools on different ports, and the pool of
// 'taskworker up' (DIR/pool), never share one.
func defaultPoolDir(listen string) string {
	_, port, err := net.SplitHostPort(listen)
	if err != nil || port == "" || port == "0" {
		port = "any"
	}
	return filepath.Join(homeDir(), "pool-"+port)
}

// runPool serves until ctx ends, then drains.
func runPool(ctx context.Context, e *env, cfg pool.Config, web httpFlags) error {
	exe, err := os.Executable()
	if err != nil {
		return err
	}
	checker, err := deployed.NewChecker(ctx, filepath.Join(cfg.DataDir, "wasm-cache"), []string{exe, sandbox.ChildArg})
	if err != nil {
		return err
	}
	defer checker.Close(context.Background())
	cfg.Checker = checker
	p, err := pool.New(cfg)
	if err != nil {
		return err
	}
	if err := p.Start(ctx); err != nil {
		return err
	}
	caFile := cfg.CACert
	if caFile == "" && !cfg.Insecure {
		caFile = filepath.Join(cfg.DataDir, pki.CACertFile)
	}
	cfg.Logger.Info("pool ready", "address", p.Addr(), "admin_token_file", filepath.Join(cfg.DataDir, pool.AdminTokenFile),
		"join_token_file", filepath.Join(cfg.DataDir, pool.JoinTokenFile), "ca_file", caFile)
	if web.listen != "" {
		var g prometheus.Gatherer
		if cfg.Metrics != nil {
			g = cfg.Metrics.Registry
		}
		site, err := serveDashboard(ctx, web, dialable(p.Addr()), caFile, g, cfg.Logger)
		if err != nil {
			return err
		}
		cfg.Logger.Info("dashboard: sign in with a token", "url", site.url)
	}
	<-ctx.Done()
	sctx, cancel := context.WithTimeout(context.Background(), 30*time.Second)
	defer cancel()
	return p.Stop(sctx)
}

// otlpInsecure says whether spans go to endpoint in plaintext: a URL says
// by its scheme; a bare host:port is a collector beside the process.
func otlpInsecure(endpoint string) bool {
	return !strings.HasPrefix(cmp.Or(endpoint, os.Getenv(tracing.EnvEndpoint)), "https://")
}
