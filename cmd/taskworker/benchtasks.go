package main

import (
	"context"
	"fmt"
	"time"

	"github.com/spf13/cobra"
	"google.golang.org/grpc/codes"
	"google.golang.org/grpc/status"

	"github.com/hivemind/taskworker"
	v1 "github.com/hivemind/taskworker/api/taskworker/v1"
	"github.com/hivemind/taskworker/internal/bench"
)

func benchTasksCommand(e *env) *cobra.Command {
	var (
		cf                 clientFlags
		concurrency        []int
		duration, warmup   time.Duration
		function, argsJSON string
	)
	cmd := &cobra.Command{
		Use:   "tasks",
		Short: "Tasks/s and submit-to-result latency, against synchronous calls of the same function",
		Long: `Submit tasks of a function and wait for each to end, at each concurrency for
--duration: each "task" row counts tasks submitted and completed end to end
(durable in etcd, claimed, run, recorded), its latency is from submit to
result. The "call" rows are synchronous calls of the same function in the
same run, the baseline.`,
		Args: cobra.NoArgs,
		RunE: cf.run(func(cmd *cobra.Command, _ []string, c *taskworker.Client) error {
			ctx := cmd.Context()
			args := []byte(argsJSON)
			tasks := v1.NewTaskServiceClient(c.Conn())
			task := func(ctx context.Context) error {
				s, err := tasks.Submit(ctx, &v1.SubmitRequest{FunctionName: function, Args: args})
				if err != nil {
					return err
				}
				w, err := tasks.WaitTask(ctx, &v1.WaitTaskRequest{Id: s.Task.Id})
				if err != nil {
					return err
				}
				if w.Task.State != v1.TaskState_TASK_STATE_SUCCEEDED {
					return status.Errorf(codes.Aborted, "task %s ended %s", s.Task.Id, w.Task.State)
				}
				return nil
			}
			call := func(ctx context.Context) error {
				_, err := c.CallJSON(ctx, function, args)
				return err
			}
			if err := task(ctx); err != nil {
				return fmt.Errorf("a first task of %s failed: %w", function, err)
			}
			fmt.Fprintf(e.stdout, "function %s, args %s, %s per run after %s warm-up\n%s\n", function, argsJSON, duration, warmup, bench.Header)
			for _, n := range concurrency {
				t := bench.Run(ctx, "task", n, warmup, duration, task)
				s := bench.Run(ctx, "call", n, warmup, duration, call)
				fmt.Fprintf(e.stdout, "%s\n%s\ntask/call at concurrency %d: rate %.2fx, p50 %.2fx\n", t, s, n, t.Rate()/s.Rate(), float64(t.P50)/float64(s.P50))
				for _, r := range []bench.Result{t, s} {
					if r.FirstError != nil {
						fmt.Fprintf(e.stdout, "  %s: first error: %s\n", r.Target, oneLine(r.FirstError))
					}
				}
			}
			return nil
		}),
	}
	cf.register(cmd)
	f := cmd.Flags()
	f.IntSliceVar(&concurrency, "concurrency", []int{1, 64}, "concurrent submitters (comma-separated list: one run each)")
	f.DurationVar(&duration, "duration", 5*time.Second, "measured time per run")
	f.DurationVar(&warmup, "warmup", time.Second, "unmeasured time before each run")
	f.StringVar(&function, "function", "add", "function to run")
	f.StringVar(&argsJSON, "args", "[1, 2]", "arguments as a JSON array")
	return cmd
}
