package main

import (
	"context"
	"fmt"
	"io"
	"strings"
	"text/tabwriter"
	"time"

	"github.com/spf13/cobra"

	"github.com/hivemind/taskworker"
	"github.com/hivemind/taskworker/internal/dashboard"
)

func statusCommand(e *env) *cobra.Command {
	var (
		cf    clientFlags
		watch time.Duration
	)
	cmd := &cobra.Command{
		Use:   "status",
		Short: "Show the network as the dashboard does: workers, functions, files, repairs, tasks",
		Long: `Show what your token may see of the network: the workers and their load, the
functions, your tasks by state, and for an admin the files by redundancy and
the repairs. It is the dashboard's picture in a terminal; --watch redraws it.`,
		Example: `  taskworker status
  taskworker status --watch 2s`,
		Args: cobra.NoArgs,
		RunE: cf.run(func(cmd *cobra.Command, _ []string, c *taskworker.Client) error {
			for {
				ctx, cancel := context.WithTimeout(cmd.Context(), time.Minute)
				s, err := dashboard.Collect(ctx, c.Conn())
				cancel()
				if err != nil {
					return err
				}
				if watch > 0 {
					// Clear the screen and go home, as watch(1) does.
					fmt.Fprint(e.stdout, "\x1b[H\x1b[2J")
				}
				printStatus(e.stdout, s)
				if watch <= 0 {
					return nil
				}
				select {
				case <-cmd.Context().Done():
					return nil
				case <-time.After(watch):
				}
			}
		}),
	}
	cf.register(cmd)
	cmd.Flags().DurationVar(&watch, "watch", 0, "redraw at this interval until interrupted (e.g. 2s)")
	return cmd
}

func printStatus(out io.Writer, s *dashboard.Snapshot) {
	role := ""
	if s.Admin {
		role = " (admin)"
	}
	fmt.Fprintf(out, "as %s%s at %s\n", s.User, role, s.Time.Local().Format(time.DateTime))
	fmt.Fprintf(out, "workers:  %d\n", len(s.Workers))
	tw := tabwriter.NewWriter(out, 0, 4, 2, ' ', 0)
	fmt.Fprintln(tw, "  ID\tADDRESS\tZONE\tSTATE\tINFLIGHT\tCALLS\tUP\tHEARTBEAT\tFUNCTIONS")
	for _, w := range s.Workers {
		state := "serving"
		if w.Draining {
			state = "draining"
		}
		fmt.Fprintf(tw, "  %s\t%s\t%s\t%s\t%d\t%d\t%s\t%s\t%s\n", w.ID, w.Address, dash(w.Zone), state, w.Inflight, w.CallsTotal, w.Up,
			dash(w.LastHeartbeat), strings.Join(w.Functions, ","))
	}
	tw.Flush()
	fmt.Fprintf(out, "functions: %d\n", len(s.Functions))
	for _, f := range s.Functions {
		fmt.Fprintf(out, "  %s (%s) on %d workers\n", f.Name, dash(f.Runtime), len(f.Workers))
	}
	if st := s.Storage; st != nil {
		fmt.Fprintf(out, "files:    %d files, %d versions: %d at full redundancy, %d single copy, %d reduced, %d lost (%.1f MiB stored)\n",
			st.Files, st.Full+st.SingleCopy+st.Reduced+st.Lost, st.Full, st.SingleCopy, st.Reduced, st.Lost, float64(st.BytesStored)/(1<<20))
		fmt.Fprintf(out, "shards:   %d known missing or damaged; workers' inventories last checked %s\n", st.ShardsDamaged, st.InventoryCheck)
		fmt.Fprintf(out, "repairs:  %d pending, %d done, %d failed; %d shards (%.1f MiB) rebuilt\n",
			st.RepairsPending, st.RepairsDone, st.RepairsFailed, st.ShardsRebuilt, float64(st.BytesRebuilt)/(1<<20))
	}
	if len(s.Tasks) > 0 {
		parts := make([]string, len(s.Tasks))
		for i, t := range s.Tasks {
			at := ""
			if t.AtLeast {
				at = ">="
			}
			parts[i] = fmt.Sprintf("%s %s%d", t.State, at, t.Count)
		}
		fmt.Fprintf(out, "tasks:    %s\n", strings.Join(parts, ", "))
	}
}

func dash(s string) string {
	if s == "" {
		return "-"
	}
	return s
}
