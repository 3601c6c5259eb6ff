package main

import (
	"context"
	"os"
	"os/signal"
	"path/filepath"
	"syscall"
	"time"

	"github.com/spf13/cobra"

	"github.com/hivemind/taskworker/internal/deployed"
	"github.com/hivemind/taskworker/internal/pool"
	"github.com/hivemind/taskworker/internal/sandbox"
)

func poolCommand(e *env) *cobra.Command {
	cfg := pool.DefaultConfig(filepath.Join(homeDir(), "pool"))
	cmd := &cobra.Command{
		Use:   "pool",
		Short: "Run a node pool (with an embedded etcd unless --etcd-endpoints is given)",
		Long: `Run a node pool: the front door of a network. It authenticates callers, routes
function calls to workers and keeps the network's state in etcd. On first start
it writes admin.token and join.token to its data directory.`,
		Args: cobra.NoArgs,
		RunE: func(cmd *cobra.Command, _ []string) error {
			cfg.Logger = e.logger()
			ctx, stop := signal.NotifyContext(cmd.Context(), syscall.SIGINT, syscall.SIGTERM)
			defer stop()
			return runPool(ctx, e, cfg)
		},
	}
	f := cmd.Flags()
	f.StringVar(&cfg.Listen, "listen", cfg.Listen, "address to serve gRPC on")
	f.StringVar(&cfg.DataDir, "data-dir", cfg.DataDir, "directory for the embedded etcd and the bootstrap tokens")
	f.StringSliceVar(&cfg.EtcdEndpoints, "etcd-endpoints", nil, "use this etcd cluster instead of an embedded one (comma-separated)")
	f.DurationVar(&cfg.LeaseTTL, "lease-ttl", cfg.LeaseTTL, "how long a silent worker stays listed")
	f.IntVar(&cfg.MaxArgsBytes, "max-call-bytes", cfg.MaxArgsBytes, "largest accepted call arguments, in bytes")
	f.DurationVar(&cfg.Files.RepairGrace, "repair-grace", cfg.Files.RepairGrace, "how long a lost worker's shards wait before they are rebuilt elsewhere")
	f.IntVar(&cfg.Files.BlockSize, "block-size", cfg.Files.BlockSize, "size of the blocks files are erasure-coded in, in bytes")
	f.DurationVar(&cfg.Files.GCMinAge, "gc-min-age", cfg.Files.GCMinAge, "age at which shards no file refers to are deleted")
	return cmd
}

// runPool serves until ctx ends, then drains.
func runPool(ctx context.Context, e *env, cfg pool.Config) error {
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
	cfg.Logger.Info("pool ready", "address", p.Addr(), "admin_token_file", filepath.Join(cfg.DataDir, pool.AdminTokenFile),
		"join_token_file", filepath.Join(cfg.DataDir, pool.JoinTokenFile))
	<-ctx.Done()
	sctx, cancel := context.WithTimeout(context.Background(), 30*time.Second)
	defer cancel()
	return p.Stop(sctx)
}
