package main

import (
	"fmt"
	"os"
	"time"

	"github.com/spf13/cobra"

	"github.com/hivemind/taskworker/internal/chaos"
)

func benchChaosCommand(e *env) *cobra.Command {
	var (
		cfg    = chaos.DefaultConfig("", "", 0)
		faults []string
		keep   bool
	)
	cmd := &cobra.Command{
		Use:   "chaos",
		Short: "Check the file service's history for linearizability while faults are injected",
		Long: `Start a network of its own (an etcd in this process, two pool processes,
--workers worker processes, data under --dir), run --clients clients doing
random Push, Revise, Get, Delete and FileHistory on --files files for
--duration while killing and restarting workers and pools, stopping a worker
past its lease and filling a worker's disk; then check the history with
porcupine and check that every file is readable and back at full redundancy.

A failing history is written as an HTML visualization to $TASKWORKER_ARTIFACTS
(or the temporary directory). --seed replays a run's choices.`,
		Args: cobra.NoArgs,
		RunE: func(cmd *cobra.Command, _ []string) error {
			var err error
			if cfg.Executable, err = os.Executable(); err != nil {
				return err
			}
			if cfg.Faults, err = chaos.ParseFaults(faults); err != nil {
				return err
			}
			check := cfg // before making a directory for a run that cannot start
			if check.Dir == "" {
				check.Dir = os.TempDir()
			}
			if err := check.Validate(); err != nil {
				return err
			}
			if cfg.Seed == 0 {
				cfg.Seed = uint64(time.Now().UnixNano())
			}
			if cfg.Dir == "" {
				if cfg.Dir, err = os.MkdirTemp("", "taskworker-chaos-"); err != nil {
					return err
				}
			}
			cfg.Log = e.stderr
			rep, err := chaos.Run(cmd.Context(), cfg)
			fmt.Fprint(e.stdout, rep)
			if err != nil {
				return err // the data and logs stay in --dir for the replay
			}
			if !keep {
				os.RemoveAll(cfg.Dir)
			}
			fmt.Fprintln(e.stdout, "linearizable; every file readable and at full redundancy")
			return nil
		},
	}
	f := cmd.Flags()
	f.Uint64Var(&cfg.Seed, "seed", 0, "seed of every random choice (0: a new one, printed)")
	f.DurationVar(&cfg.Duration, "duration", cfg.Duration, "how long to inject faults")
	f.IntVar(&cfg.Workers, "workers", cfg.Workers, "worker processes")
	f.IntVar(&cfg.Clients, "clients", cfg.Clients, "concurrent clients")
	f.IntVar(&cfg.Files, "files", cfg.Files, "files the clients share")
	var all []string
	for _, fault := range chaos.AllFaults {
		all = append(all, string(fault))
	}
	f.StringSliceVar(&faults, "faults", all, "fault classes to inject")
	f.DurationVar(&cfg.RepairDeadline, "repair-deadline", cfg.RepairDeadline, "how long the network may take to heal after the faults")
	f.StringVar(&cfg.Dir, "dir", "", "directory for the network's data and logs (default: a temporary one, removed if the run passes)")
	f.BoolVar(&keep, "keep", false, "keep --dir after a passing run")
	return cmd
}
