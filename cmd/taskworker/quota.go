package main

import (
	"context"
	"errors"
	"fmt"
	"strconv"
	"text/tabwriter"
	"time"

	"github.com/spf13/cobra"
	"github.com/spf13/pflag"
	"google.golang.org/protobuf/proto"

	"github.com/hivemind/taskworker"
	v1 "github.com/hivemind/taskworker/api/taskworker/v1"
	"github.com/hivemind/taskworker/internal/names"
	"github.com/hivemind/taskworker/internal/quota"
)

func quotaCommand(e *env) *cobra.Command {
	cmd := &cobra.Command{
		Use:   "quota",
		Short: "Show and set users' quotas: storage, modules, calls, tasks, versions kept",
	}
	cmd.AddCommand(quotaSetCommand(e), quotaGetCommand(e), quotaListCommand(e))
	return cmd
}

// quotaFlags are set's flags; only those given change anything.
type quotaFlags struct {
	storage, modules, keepFor                        string
	moduleCount, calls, sandbox, tasks, keepVersions int64
}

func (f *quotaFlags) register(fl *pflag.FlagSet) {
	fl.StringVar(&f.storage, "storage", "", "bytes of all the user's file versions, e.g. 10GiB (0: no limit)")
	fl.StringVar(&f.modules, "modules", "", "bytes of the user's deployed modules, e.g. 200MiB (0: no limit)")
	fl.Int64Var(&f.moduleCount, "module-count", 0, "distinct modules the user may deploy (0: no limit)")
	fl.Int64Var(&f.calls, "calls", 0, "the user's calls running at once (0: no limit)")
	fl.Int64Var(&f.sandbox, "sandbox-processes", 0, "sandbox processes the user's calls hold at once on one worker (0: no limit)")
	fl.Int64Var(&f.tasks, "tasks", 0, "the user's tasks queued or running (0: no limit)")
	fl.Int64Var(&f.keepVersions, "keep-versions", 0, "versions of each file kept (0: the default, 10)")
	fl.StringVar(&f.keepFor, "keep-for", "", "keep versions younger than this too, e.g. 720h (0: none)")
}

// build returns the change the flags that were given ask for.
func (f *quotaFlags) build(fl *pflag.FlagSet) (*v1.Quota, error) {
	q := &v1.Quota{}
	for _, s := range []struct {
		flag string
		dst  **int64
		n    int64
		size string
	}{
		{"storage", &q.StorageBytes, 0, f.storage},
		{"modules", &q.ModuleBytes, 0, f.modules},
		{"module-count", &q.Modules, f.moduleCount, ""},
		{"calls", &q.Calls, f.calls, ""},
		{"sandbox-processes", &q.SandboxProcesses, f.sandbox, ""},
		{"tasks", &q.Tasks, f.tasks, ""},
		{"keep-versions", &q.KeepVersions, f.keepVersions, ""},
	} {
		if !fl.Changed(s.flag) {
			continue
		}
		n := s.n
		if s.size != "" {
			var err error
			if n, err = parseBytes(s.size); err != nil {
				return nil, fmt.Errorf("--%s: %w", s.flag, err)
			}
		}
		*s.dst = proto.Int64(n)
	}
	if fl.Changed("keep-for") {
		d, err := time.ParseDuration(f.keepFor)
		if err != nil {
			return nil, fmt.Errorf("--keep-for %q: give a duration such as 720h, or 0", f.keepFor)
		}
		q.KeepForMs = proto.Int64(d.Milliseconds())
	}
	if err := quota.Check(q); err != nil {
		return nil, err
	}
	return q, nil
}

func quotaSetCommand(e *env) *cobra.Command {
	var (
		cf              clientFlags
		f               quotaFlags
		defaults, reset bool
	)
	cmd := &cobra.Command{
		Use:   "set (USER | --default) [--storage SIZE] [--modules SIZE] [--calls N] ...",
		Short: "Set a user's quotas, or the defaults of users who have none (needs an admin token)",
		Long: `Set the quotas given as flags, for one user or, with --default, for every
user who has no quota of their own for that field. Flags not given keep their
value. 0 means no limit (for --keep-versions: the network's default of 10).
--reset forgets the user's own quotas first, so the defaults apply again.

A request that would take a user over a quota is refused before any work is
done, with ResourceExhausted naming the quota and the use. Lowering a quota
below the current use refuses new work but deletes nothing.`,
		Example: `  taskworker quota set bob --storage 10GiB --modules 200MiB --calls 64 --tasks 1000
  taskworker quota set --default --storage 1GiB --keep-versions 5
  taskworker quota set bob --reset`,
		Args: cobra.MaximumNArgs(1),
		RunE: func(cmd *cobra.Command, args []string) error {
			req := &v1.SetQuotaRequest{Defaults: defaults, Reset_: reset}
			switch {
			case defaults && len(args) == 1:
				return errors.New("give a user or --default, not both")
			case !defaults && len(args) == 0:
				return errors.New("name the user whose quotas to set, or give --default")
			case defaults && reset:
				return errors.New("--reset forgets a user's own quotas; the defaults have none to forget")
			case len(args) == 1:
				if err := names.User(args[0]); err != nil {
					return fmt.Errorf("user: %w", err)
				}
				req.User = args[0]
			}
			q, err := f.build(cmd.Flags())
			if err != nil {
				return err
			}
			req.Quota = q
			return cf.run(func(cmd *cobra.Command, _ []string, c *taskworker.Client) error {
				ctx, cancel := context.WithTimeout(cmd.Context(), 10*time.Second)
				defer cancel()
				resp, err := v1.NewQuotaServiceClient(c.Conn()).SetQuota(ctx, req)
				if err != nil {
					return err
				}
				who := req.User
				if defaults {
					who = "the defaults"
				}
				fmt.Fprintf(e.stdout, "quotas of %s now:\n", who)
				return printQuota(e, resp.Effective, nil)
			})(cmd, args)
		},
	}
	cf.register(cmd)
	f.register(cmd.Flags())
	cmd.Flags().BoolVar(&defaults, "default", false, "set the defaults of users who have no quota of their own")
	cmd.Flags().BoolVar(&reset, "reset", false, "forget the user's own quotas first")
	return cmd
}

func quotaGetCommand(e *env) *cobra.Command {
	var (
		cf     clientFlags
		asJSON bool
	)
	cmd := &cobra.Command{
		Use:   "get [USER]",
		Short: "Show the quotas in force for you, or for USER (an admin's token)",
		Args:  cobra.MaximumNArgs(1),
		RunE: cf.run(func(cmd *cobra.Command, args []string, c *taskworker.Client) error {
			req := &v1.GetQuotaRequest{}
			if len(args) == 1 {
				if err := names.User(args[0]); err != nil {
					return fmt.Errorf("user: %w", err)
				}
				req.User = args[0]
			}
			ctx, cancel := context.WithTimeout(cmd.Context(), 10*time.Second)
			defer cancel()
			resp, err := v1.NewQuotaServiceClient(c.Conn()).GetQuota(ctx, req)
			if err != nil {
				return err
			}
			if asJSON {
				return printJSON(e, resp)
			}
			fmt.Fprintf(e.stdout, "quotas of %s (* their own; the rest are the defaults):\n", resp.User)
			return printQuota(e, resp.Effective, resp.Own)
		}),
	}
	cf.register(cmd)
	cmd.Flags().BoolVar(&asJSON, "json", false, "print JSON")
	return cmd
}

func quotaListCommand(e *env) *cobra.Command {
	var (
		cf     clientFlags
		asJSON bool
	)
	cmd := &cobra.Command{
		Use:   "ls",
		Short: "List the defaults and every user's own quotas (needs an admin token)",
		Args:  cobra.NoArgs,
		RunE: cf.run(func(cmd *cobra.Command, _ []string, c *taskworker.Client) error {
			ctx, cancel := context.WithTimeout(cmd.Context(), 10*time.Second)
			defer cancel()
			resp, err := v1.NewQuotaServiceClient(c.Conn()).ListQuotas(ctx, &v1.ListQuotasRequest{})
			if err != nil {
				return err
			}
			if asJSON {
				return printJSON(e, resp)
			}
			tw := tabwriter.NewWriter(e.stdout, 0, 4, 2, ' ', 0)
			fmt.Fprintln(tw, "USER\tSTORAGE\tMODULES\tMODULE BYTES\tCALLS\tSANDBOX\tTASKS\tKEEP VERSIONS\tKEEP FOR")
			row := func(user string, q *v1.Quota) {
				cells := quotaCells(q)
				fmt.Fprintf(tw, "%s", user)
				for _, c := range cells {
					fmt.Fprintf(tw, "\t%s", c)
				}
				fmt.Fprintln(tw)
			}
			row("(default)", resp.Defaults)
			for _, u := range resp.Users {
				row(u.User, u.Own)
			}
			return tw.Flush()
		}),
	}
	cf.register(cmd)
	cmd.Flags().BoolVar(&asJSON, "json", false, "print JSON")
	return cmd
}

// quotaCells writes q's fields in the order of ls's columns; "-" for one
// not set, "none" for no limit.
func quotaCells(q *v1.Quota) []string {
	count := func(p *int64) string {
		switch {
		case p == nil:
			return "-"
		case *p == 0:
			return "none"
		}
		return strconv.FormatInt(*p, 10)
	}
	size := func(p *int64) string {
		if p == nil || *p == 0 {
			return count(p)
		}
		return quota.FormatBytes(*p)
	}
	keep := count(q.KeepVersions)
	if q.KeepVersions != nil && *q.KeepVersions == 0 {
		keep = strconv.Itoa(quota.DefaultKeepVersions)
	}
	keepFor := "-"
	if q.KeepForMs != nil {
		keepFor = "none"
		if *q.KeepForMs > 0 {
			keepFor = (time.Duration(*q.KeepForMs) * time.Millisecond).String()
		}
	}
	return []string{size(q.StorageBytes), count(q.Modules), size(q.ModuleBytes), count(q.Calls), count(q.SandboxProcesses),
		count(q.Tasks), keep, keepFor}
}

// printQuota writes effective's fields a line each, marking with * those
// in own.
func printQuota(e *env, effective, own *v1.Quota) error {
	labels := []string{"storage", "modules", "module bytes", "calls", "sandbox processes", "tasks", "keep versions", "keep for"}
	cells := quotaCells(effective)
	var mine []string
	if own != nil {
		mine = quotaCells(own)
	}
	tw := tabwriter.NewWriter(e.stdout, 0, 4, 2, ' ', 0)
	for i, l := range labels {
		mark := " "
		if mine != nil && mine[i] != "-" {
			mark = "*"
		}
		fmt.Fprintf(tw, "%s %s\t%s\n", mark, l, cells[i])
	}
	return tw.Flush()
}
