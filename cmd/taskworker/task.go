package main

import (
	"context"
	"errors"
	"fmt"
	"strings"
	"text/tabwriter"
	"time"

	"github.com/spf13/cobra"
	"google.golang.org/grpc/codes"
	"google.golang.org/grpc/status"

	"github.com/hivemind/taskworker"
	v1 "github.com/hivemind/taskworker/api/taskworker/v1"
	"github.com/hivemind/taskworker/internal/tasks"
)

func submitCommand(e *env) *cobra.Command {
	var (
		cf          clientFlags
		argsFile    string
		strict      bool
		wait        bool
		waitFor     time.Duration
		key         string
		attempts    int32
		retryErrors bool
		timeout     time.Duration
	)
	cmd := &cobra.Command{
		Use:   "submit [flags] NAME [ARG...]",
		Short: "Submit a call as a task that runs even if you go away; prints its id",
		Long: `Record a call of a function as a task and print its id as soon as the task is
durable: it runs on some worker whether or not this command is still there,
and runs again on another worker if its worker or pool is lost. Arguments are
read as by 'taskworker call'.

A lost worker always counts as a failed attempt that is retried, up to
--attempts; the function's own errors are retried only with --retry-errors.
The function can read its task id and attempt from its context, to make its
effects idempotent. --key makes a second submit with the same key return the
first task.

--wait waits for the task's end and prints its result like 'call' does.`,
		Example: `  taskworker submit add 1 2
  taskworker submit --wait add 1 2
  taskworker submit --key nightly-2026-12-02 --attempts 5 report`,
		Args: namedArgs(cobra.MinimumNArgs(1), functionArg, nil),
		RunE: cf.run(func(cmd *cobra.Command, args []string, c *taskworker.Client) error {
			callArgs, err := argsOf(args[1:], argsFile, strict, e.stdin)
			if err != nil {
				return err
			}
			if attempts < 0 {
				return fmt.Errorf("--attempts %d: give a positive count, or 0 for the pool's default", attempts)
			}
			ctx, cancel := context.WithTimeout(cmd.Context(), 10*time.Second)
			defer cancel()
			resp, err := v1.NewTaskServiceClient(c.Conn()).Submit(ctx, &v1.SubmitRequest{FunctionName: args[0], Args: callArgs,
				IdempotencyKey: key, TimeoutMs: timeout.Milliseconds(), Retry: &v1.RetryPolicy{MaxAttempts: attempts, RetryErrors: retryErrors}})
			if err != nil {
				return tooLarge(err, len(callArgs)+len(args[0]))
			}
			if resp.Existing {
				fmt.Fprintf(e.stderr, "a task with key %q exists already: %s\n", key, resp.Task.Id)
			}
			if !wait {
				fmt.Fprintln(e.stdout, resp.Task.Id)
				return nil
			}
			fmt.Fprintf(e.stderr, "task %s\n", resp.Task.Id)
			return waitAndPrint(cmd.Context(), e, c, resp.Task.Id, waitFor)
		}),
	}
	cmd.Flags().SetInterspersed(false)
	cf.register(cmd)
	f := cmd.Flags()
	f.StringVar(&argsFile, "args-file", "", "read the arguments as one JSON array from this file (- for standard input)")
	f.BoolVar(&strict, "json", false, "require every ARG to be valid JSON")
	f.BoolVar(&wait, "wait", false, "wait for the task to end and print its result")
	f.DurationVar(&waitFor, "wait-timeout", time.Hour, "with --wait: give up waiting (not the task) after this long")
	f.StringVar(&key, "key", "", "idempotency key: a second submit with it returns the first task")
	f.Int32Var(&attempts, "attempts", 0, "attempts in all (default: the pool's, 3)")
	f.BoolVar(&retryErrors, "retry-errors", false, "retry the function's own errors too, not only lost workers")
	f.DurationVar(&timeout, "timeout", 0, "time bound of each attempt (default: the function's own)")
	return cmd
}

// waitAndPrint waits for task id to end and prints its result, or returns
// its error as a status.
func waitAndPrint(ctx context.Context, e *env, c *taskworker.Client, id string, d time.Duration) error {
	ctx, cancel := context.WithTimeout(ctx, d)
	defer cancel()
	t, err := c.WaitTask(ctx, id)
	if err != nil {
		if status.Code(err) == codes.DeadlineExceeded {
			return fmt.Errorf("task %s has not ended after %s; it goes on (taskworker task %s)", id, d, id)
		}
		return err
	}
	switch t.State {
	case v1.TaskState_TASK_STATE_SUCCEEDED:
		fmt.Fprintln(e.stdout, string(t.Result))
		return nil
	case v1.TaskState_TASK_STATE_CANCELLED:
		return status.Errorf(codes.Canceled, "task %s was cancelled", id)
	}
	last := t.Attempts[len(t.Attempts)-1]
	return status.Errorf(codes.Code(last.Code), "task %s failed after %d attempts: %s", id, len(t.Attempts), last.Error)
}

func taskCommand(e *env) *cobra.Command {
	var (
		cf     clientFlags
		asJSON bool
	)
	cmd := &cobra.Command{
		Use:   "task ID",
		Short: "Show a task: state, attempts, workers, timings, result or errors; wait for it or cancel it",
		Args:  namedArgs(cobra.ExactArgs(1), tasks.CheckID),
		RunE: cf.run(func(cmd *cobra.Command, args []string, c *taskworker.Client) error {
			ctx, cancel := context.WithTimeout(cmd.Context(), 10*time.Second)
			defer cancel()
			t, err := c.GetTask(ctx, args[0])
			if err != nil {
				return err
			}
			if asJSON {
				return printJSON(e, t)
			}
			return printTask(e, t)
		}),
	}
	cf.register(cmd)
	cmd.Flags().BoolVar(&asJSON, "json", false, "print JSON")
	cmd.AddCommand(taskWaitCommand(e), taskCancelCommand(e))
	return cmd
}

func taskWaitCommand(e *env) *cobra.Command {
	var (
		cf      clientFlags
		timeout time.Duration
	)
	cmd := &cobra.Command{
		Use:   "wait ID",
		Short: "Wait for a task to end and print its result",
		Args:  namedArgs(cobra.ExactArgs(1), tasks.CheckID),
		RunE: cf.run(func(cmd *cobra.Command, args []string, c *taskworker.Client) error {
			return waitAndPrint(cmd.Context(), e, c, args[0], timeout)
		}),
	}
	cf.register(cmd)
	cmd.Flags().DurationVar(&timeout, "timeout", time.Hour, "give up waiting (not the task) after this long")
	return cmd
}

func taskCancelCommand(e *env) *cobra.Command {
	var cf clientFlags
	cmd := &cobra.Command{
		Use:   "cancel ID",
		Short: "Cancel a task: a queued one never runs, a running one has its context cancelled",
		Args:  namedArgs(cobra.ExactArgs(1), tasks.CheckID),
		RunE: cf.run(func(cmd *cobra.Command, args []string, c *taskworker.Client) error {
			ctx, cancel := context.WithTimeout(cmd.Context(), 10*time.Second)
			defer cancel()
			t, err := c.CancelTask(ctx, args[0])
			if err != nil {
				return err
			}
			fmt.Fprintf(e.stdout, "task %s: %s\n", t.Id, stateName(t))
			return nil
		}),
	}
	cf.register(cmd)
	return cmd
}

func tasksCommand(e *env) *cobra.Command {
	var (
		cf              clientFlags
		state, function string
		limit           int32
		asJSON          bool
	)
	cmd := &cobra.Command{
		Use:   "tasks",
		Short: "List your tasks, newest first",
		Args:  cobra.NoArgs,
		RunE: cf.run(func(cmd *cobra.Command, _ []string, c *taskworker.Client) error {
			req := &v1.ListTasksRequest{FunctionName: function, Limit: limit}
			if state != "" {
				s, ok := v1.TaskState_value["TASK_STATE_"+strings.ToUpper(state)]
				if !ok || s == 0 {
					return fmt.Errorf("--state %q: give queued, running, succeeded, failed or cancelled", state)
				}
				req.State = v1.TaskState(s)
			}
			ctx, cancel := context.WithTimeout(cmd.Context(), 10*time.Second)
			defer cancel()
			resp, err := v1.NewTaskServiceClient(c.Conn()).ListTasks(ctx, req)
			if err != nil {
				return err
			}
			if asJSON {
				return printJSON(e, resp)
			}
			tw := tabwriter.NewWriter(e.stdout, 0, 4, 2, ' ', 0)
			fmt.Fprintln(tw, "ID\tFUNCTION\tSTATE\tATTEMPTS\tCREATED\tENDED")
			for _, t := range resp.Tasks {
				fmt.Fprintf(tw, "%s\t%s\t%s\t%d\t%s\t%s\n", t.Id, t.FunctionName, stateName(t), len(t.Attempts),
					formatMillis(t.CreatedAtMs, "-"), formatMillis(t.EndedAtMs, "-"))
			}
			return tw.Flush()
		}),
	}
	cf.register(cmd)
	f := cmd.Flags()
	f.StringVar(&state, "state", "", "only tasks in this state: queued, running, succeeded, failed or cancelled")
	f.StringVar(&function, "function", "", "only tasks of this function")
	f.Int32Var(&limit, "limit", 100, "at most this many")
	f.BoolVar(&asJSON, "json", false, "print JSON")
	return cmd
}

func stateName(t *v1.Task) string {
	s := strings.ToLower(strings.TrimPrefix(t.State.String(), "TASK_STATE_"))
	if t.CancelRequested && !tasks.Ended(t.State) {
		s += " (cancelling)"
	}
	return s
}

func printTask(e *env, t *v1.Task) error {
	tw := tabwriter.NewWriter(e.stdout, 0, 4, 2, ' ', 0)
	fmt.Fprintf(tw, "task\t%s\nfunction\t%s\nstate\t%s\ncreated\t%s\n", t.Id, t.FunctionName, stateName(t), formatMillis(t.CreatedAtMs, "-"))
	if t.EndedAtMs != 0 {
		fmt.Fprintf(tw, "ended\t%s (%s after it was submitted)\n", formatMillis(t.EndedAtMs, "-"),
			time.Duration(t.EndedAtMs-t.CreatedAtMs)*time.Millisecond)
	}
	if t.IdempotencyKey != "" {
		fmt.Fprintf(tw, "key\t%s\n", t.IdempotencyKey)
	}
	if t.State == v1.TaskState_TASK_STATE_SUCCEEDED {
		fmt.Fprintf(tw, "result\t%s\n", t.Result)
	}
	if err := tw.Flush(); err != nil {
		return err
	}
	if len(t.Attempts) == 0 {
		return nil
	}
	fmt.Fprintln(e.stdout)
	tw = tabwriter.NewWriter(e.stdout, 0, 4, 2, ' ', 0)
	fmt.Fprintln(tw, "ATTEMPT\tWORKER\tSTARTED\tTOOK\tOUTCOME")
	for _, a := range t.Attempts {
		took, outcome := "-", "running"
		if a.EndedAtMs != 0 {
			took = (time.Duration(a.EndedAtMs-a.StartedAtMs) * time.Millisecond).String()
			outcome = "ok"
			if a.Error != "" {
				outcome = fmt.Sprintf("%s: %s", codes.Code(a.Code), cell(a.Error))
			}
		}
		worker := a.WorkerId
		if worker == "" {
			worker = "-"
		}
		fmt.Fprintf(tw, "%d\t%s\t%s\t%s\t%s\n", a.Number, worker, formatMillis(a.StartedAtMs, "-"), took, outcome)
	}
	return tw.Flush()
}

func scheduleCommand(e *env) *cobra.Command {
	var (
		cf             clientFlags
		name, cronExpr string
		missed         string
		every, timeout time.Duration
		attempts       int32
		strict         bool
	)
	cmd := &cobra.Command{
		Use:   "schedule [flags] FUNCTION [ARG...]",
		Short: "Submit a task of a function every interval or on a cron schedule",
		Long: `Make (or replace) a schedule that submits a task of FUNCTION with the given
arguments every --every, or at the times of --cron (five fields: minute hour
day-of-month month day-of-week, in UTC; or @hourly, @daily...). Each tick
submits exactly one task, whichever pool replica fires it.

Ticks missed while no pool could fire them: --missed one (the default) runs
once for all of them, then goes on from the next tick; --missed skip drops
them. 'schedule ls' lists your schedules, 'schedule rm NAME' removes one (the
tasks it submitted stay).`,
		Example: `  taskworker schedule --every 1m cleanup
  taskworker schedule --name nightly --cron '30 2 * * *' report daily
  taskworker schedule ls
  taskworker schedule rm nightly`,
		Args: namedArgs(cobra.MinimumNArgs(1), functionArg, nil),
		RunE: cf.run(func(cmd *cobra.Command, args []string, c *taskworker.Client) error {
			callArgs, err := cliArgs(args[1:], strict)
			if err != nil {
				return err
			}
			if name == "" {
				name = args[0]
			}
			sc := &v1.Schedule{Name: name, FunctionName: args[0], Args: callArgs, EveryMs: every.Milliseconds(), Cron: cronExpr,
				TimeoutMs: timeout.Milliseconds(), Retry: &v1.RetryPolicy{MaxAttempts: attempts}}
			switch missed {
			case "one":
				sc.Missed = v1.MissedTicks_MISSED_TICKS_ONE
			case "skip":
				sc.Missed = v1.MissedTicks_MISSED_TICKS_SKIP
			default:
				return fmt.Errorf("--missed %q: give one or skip", missed)
			}
			if (every != 0) == (cronExpr != "") {
				return errors.New("give --every or --cron, one of them")
			}
			ctx, cancel := context.WithTimeout(cmd.Context(), 10*time.Second)
			defer cancel()
			resp, err := v1.NewTaskServiceClient(c.Conn()).PutSchedule(ctx, &v1.PutScheduleRequest{Schedule: sc})
			if err != nil {
				return err
			}
			fmt.Fprintf(e.stdout, "schedule %s: %s, first run %s\n", resp.Schedule.Name, args[0], formatMillis(resp.Schedule.NextRunAtMs, "-"))
			return nil
		}),
	}
	cmd.Flags().SetInterspersed(false)
	cf.register(cmd)
	f := cmd.Flags()
	f.StringVar(&name, "name", "", "the schedule's name (default: the function's)")
	f.DurationVar(&every, "every", 0, "submit every interval, e.g. 1m (at least 1s)")
	f.StringVar(&cronExpr, "cron", "", "submit at the times of this cron expression (UTC)")
	f.StringVar(&missed, "missed", "one", "ticks missed during an outage: one (run once) or skip")
	f.DurationVar(&timeout, "timeout", 0, "time bound of each attempt (default: the function's own)")
	f.Int32Var(&attempts, "attempts", 0, "attempts of each task (default: the pool's, 3)")
	f.BoolVar(&strict, "json", false, "require every ARG to be valid JSON")
	cmd.AddCommand(scheduleListCommand(e), scheduleRemoveCommand(e))
	return cmd
}

func scheduleListCommand(e *env) *cobra.Command {
	var (
		cf     clientFlags
		asJSON bool
	)
	cmd := &cobra.Command{
		Use:   "ls",
		Short: "List your schedules",
		Args:  cobra.NoArgs,
		RunE: cf.run(func(cmd *cobra.Command, _ []string, c *taskworker.Client) error {
			ctx, cancel := context.WithTimeout(cmd.Context(), 10*time.Second)
			defer cancel()
			resp, err := v1.NewTaskServiceClient(c.Conn()).ListSchedules(ctx, &v1.ListSchedulesRequest{})
			if err != nil {
				return err
			}
			if asJSON {
				return printJSON(e, resp)
			}
			tw := tabwriter.NewWriter(e.stdout, 0, 4, 2, ' ', 0)
			fmt.Fprintln(tw, "NAME\tFUNCTION\tWHEN\tNEXT\tLAST\tLAST TASK")
			for _, s := range resp.Schedules {
				when := s.Cron
				if s.EveryMs > 0 {
					when = "every " + (time.Duration(s.EveryMs) * time.Millisecond).String()
				}
				last := s.LastTaskId
				if last == "" {
					last = "-"
				}
				fmt.Fprintf(tw, "%s\t%s\t%s\t%s\t%s\t%s\n", s.Name, s.FunctionName, when, formatMillis(s.NextRunAtMs, "-"), formatMillis(s.LastRunAtMs, "never"), last)
			}
			return tw.Flush()
		}),
	}
	cf.register(cmd)
	cmd.Flags().BoolVar(&asJSON, "json", false, "print JSON")
	return cmd
}

func scheduleRemoveCommand(e *env) *cobra.Command {
	var cf clientFlags
	cmd := &cobra.Command{
		Use:   "rm NAME",
		Short: "Remove a schedule (the tasks it submitted stay)",
		Args:  namedArgs(cobra.ExactArgs(1), functionArg),
		RunE: cf.run(func(cmd *cobra.Command, args []string, c *taskworker.Client) error {
			ctx, cancel := context.WithTimeout(cmd.Context(), 10*time.Second)
			defer cancel()
			if _, err := v1.NewTaskServiceClient(c.Conn()).DeleteSchedule(ctx, &v1.DeleteScheduleRequest{Name: args[0]}); err != nil {
				return err
			}
			fmt.Fprintf(e.stdout, "removed schedule %s\n", args[0])
			return nil
		}),
	}
	cf.register(cmd)
	return cmd
}
