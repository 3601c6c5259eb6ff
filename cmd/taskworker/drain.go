package main

import (
	"context"
	"fmt"
	"strings"
	"time"

	"github.com/spf13/cobra"

	"github.com/hivemind/taskworker"
	v1 "github.com/hivemind/taskworker/api/taskworker/v1"
	"github.com/hivemind/taskworker/internal/names"
)

func drainCommand(e *env) *cobra.Command {
	var (
		cf     clientFlags
		grace  time.Duration
		undo   bool
		asJSON bool
	)
	cmd := &cobra.Command{
		Use:   "drain WORKER",
		Short: "Stop routing calls and tasks to a worker; hand back its tasks after a grace (admin)",
		Long: `Drain worker WORKER: every pool replica stops sending it new calls and tasks at
once; the calls and tasks already running on it go on until they end or the
grace runs out; then the tasks still running there are handed back to the
queue and run on another worker (a handed-back attempt does not count against
the task's --max-attempts). The command waits for that and reports what
finished and what was handed back.

The worker stays listed, as draining, and gets no work until it registers
again (a restart) or the drain is undone with --undo. It keeps and serves the
file shards it holds, and gets no new ones while the other workers can give
new files a layout as safe. A worker that gets
SIGTERM drains itself the same way (taskworker worker --drain-grace).`,
		Example: `  taskworker drain worker_001
  taskworker drain worker_001 --grace 2m
  taskworker drain --undo worker_001`,
		Args: cobra.ExactArgs(1),
		RunE: cf.run(func(cmd *cobra.Command, args []string, c *taskworker.Client) error {
			if err := names.WorkerID(args[0]); err != nil {
				return err
			}
			if grace < 0 {
				return fmt.Errorf("--grace %s is negative; give a duration such as 30s", grace)
			}
			ctx, cancel := context.WithTimeout(cmd.Context(), grace+time.Minute)
			defer cancel()
			resp, err := v1.NewAdminServiceClient(c.Conn()).DrainWorker(ctx, &v1.DrainRequest{WorkerId: args[0], GraceMs: grace.Milliseconds(), Undo: undo})
			if err != nil {
				return err
			}
			if asJSON {
				return printJSON(e, resp)
			}
			if undo {
				if resp.WasDraining {
					fmt.Fprintf(e.stdout, "worker %s takes calls and tasks again\n", args[0])
				} else {
					fmt.Fprintf(e.stdout, "worker %s was not draining; nothing to undo\n", args[0])
				}
				return nil
			}
			printDrain(e, resp)
			return nil
		}),
	}
	cf.register(cmd)
	f := cmd.Flags()
	f.DurationVar(&grace, "grace", 30*time.Second, "how long the calls and tasks running on the worker may go on before its tasks are handed back")
	f.BoolVar(&undo, "undo", false, "undo a drain: the worker takes calls and tasks again")
	f.BoolVar(&asJSON, "json", false, "print JSON")
	return cmd
}

func printDrain(e *env, r *v1.DrainResponse) {
	fmt.Fprintf(e.stdout, "worker %s drained: no new calls or tasks go to it\n", r.WorkerId)
	if len(r.SoleFunctions) > 0 {
		fmt.Fprintf(e.stdout, "warning: no other worker serves %s: their calls fail until one joins or the drain is undone\n",
			strings.Join(r.SoleFunctions, ", "))
	}
	fmt.Fprintf(e.stdout, "tasks finished: %d\n", r.TasksFinished)
	fmt.Fprintf(e.stdout, "tasks handed back: %d\n", len(r.TasksHandedBack))
	for _, id := range r.TasksHandedBack {
		fmt.Fprintf(e.stdout, "  %s\n", id)
	}
	fmt.Fprintf(e.stdout, "calls finished: %d\n", r.CallsFinished)
	if r.CallsStillRunning > 0 {
		fmt.Fprintf(e.stdout, "calls still running after the grace: %d\n", r.CallsStillRunning)
	}
	if r.ReplicasMissing > 0 {
		fmt.Fprintf(e.stdout, "warning: %d pool replicas did not report; their figures are missing above\n", r.ReplicasMissing)
	}
	fmt.Fprintf(e.stdout, "it stays drained until it restarts, or: taskworker drain --undo %s\n", r.WorkerId)
}
