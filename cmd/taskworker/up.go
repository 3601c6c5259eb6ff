package main

import (
	"os"
	"os/signal"
	"syscall"

	"github.com/spf13/cobra"

	"github.com/hivemind/taskworker/internal/localnet"
)

func upCommand(e *env) *cobra.Command {
	cfg := localnet.Config{Dir: homeDir(), Workers: 3, Listen: "127.0.0.1:50051"}
	cmd := &cobra.Command{
		Use:   "up",
		Short: "Run a whole local network: embedded etcd, a pool and N workers on 127.0.0.1",
		Long: `Run a whole network on this machine: an embedded etcd and a node pool in this
process, and --workers worker processes serving the example functions and
keeping files. When every worker has registered it prints TASKWORKER_POOL and
TASKWORKER_TOKEN (also written to DIR/env, where the other commands find them).
Ctrl-C stops everything.`,
		Args: cobra.NoArgs,
		RunE: func(cmd *cobra.Command, _ []string) error {
			exe, err := os.Executable()
			if err != nil {
				return err
			}
			cfg.Executable = exe
			cfg.Logger = e.logger()
			cfg.WorkerOutput = e.stderr
			ctx, stop := signal.NotifyContext(cmd.Context(), syscall.SIGINT, syscall.SIGTERM)
			defer stop()
			n, err := localnet.Start(ctx, cfg)
			if err != nil {
				return err
			}
			defer n.Stop()
			cfg.Logger.Info("network ready; in another shell: taskworker call add 1 2", "workers", cfg.Workers, "env_file", cfg.Dir+"/"+localnet.EnvFile)
			_, _ = e.stdout.Write([]byte(n.Env().String()))
			<-ctx.Done()
			return nil
		},
	}
	f := cmd.Flags()
	f.StringVar(&cfg.Dir, "dir", cfg.Dir, "directory for the network's data and env file (default $TASKWORKER_HOME or ~/.taskworker)")
	f.IntVar(&cfg.Workers, "workers", cfg.Workers, "number of worker processes")
	f.StringVar(&cfg.Listen, "listen", cfg.Listen, "the pool's address")
	f.DurationVar(&cfg.LeaseTTL, "lease-ttl", 0, "workers' lease TTL (default: the pool's)")
	return cmd
}
