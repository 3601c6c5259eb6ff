package main

import (
	"context"
	"fmt"
	"os"
	"path/filepath"
	"strconv"
	"strings"
	"text/tabwriter"
	"time"

	"github.com/spf13/cobra"

	"github.com/hivemind/taskworker"
	v1 "github.com/hivemind/taskworker/api/taskworker/v1"
	"github.com/hivemind/taskworker/internal/starlarkrun"
)

func deployCommand(e *env) *cobra.Command {
	var (
		cf                          clientFlags
		spec                        taskworker.DeploySpec
		runtime, memory, maxIn, out string
	)
	cmd := &cobra.Command{
		Use:   "deploy NAME FILE",
		Short: "Deploy a WebAssembly module (.wasm) or a Starlark script (.star) as a function",
		Long: `Deploy code as a function every worker with a sandbox can run. A .wasm file is
an Extism-compatible plugin (any Extism PDK, or this repository's Go guest SDK);
a .star file is a Starlark (Python dialect) script. Deploying again makes a new
version and switches to it atomically; see "deploy rollback" and "deploy history".

Each user has a namespace of their own: your NAME is yours, beside other users'
functions of the same name, and is private: only you and admins may call it,
until you deploy it with --public (every user may call it, as YOU/NAME) or grant
it to a user ("taskworker grant NAME --user U"). Each deploy says again whether
the function is public.`,
		Example: `  taskworker deploy add add.star
  taskworker deploy count_vowels count_vowels.wasm --memory 32MiB --timeout 2s --idempotent
  taskworker deploy reports reports.star --public`,
		Args: namedArgs(cobra.ExactArgs(2), functionArg, nil),
		RunE: func(cmd *cobra.Command, args []string) error {
			module, err := os.ReadFile(args[1])
			if err != nil {
				return err
			}
			switch {
			case runtime == "" && strings.HasSuffix(args[1], ".star"):
				spec.Runtime = v1.Runtime_RUNTIME_STARLARK
			case runtime == "" && strings.HasSuffix(args[1], ".wasm"):
				spec.Runtime = v1.Runtime_RUNTIME_WASM
			case runtime != "":
				r, ok := v1.Runtime_value["RUNTIME_"+strings.ToUpper(runtime)]
				if !ok || r == 0 {
					return fmt.Errorf("--runtime %q: use wasm or starlark", runtime)
				}
				spec.Runtime = v1.Runtime(r)
			}
			if spec.Runtime == v1.Runtime_RUNTIME_STARLARK {
				// Check here too, so that errors name the file as the
				// deployer knows it (the pool sees only bytes).
				export := spec.Export
				if export == "" {
					export = args[0]
				}
				if err := starlarkrun.Check(filepath.Base(args[1]), module, export); err != nil {
					return err
				}
			}
			for _, f := range []struct {
				flag, value string
				dst         *int64
			}{{"--memory", memory, &spec.Memory}, {"--max-input", maxIn, &spec.MaxInput}, {"--max-output", out, &spec.MaxOutput}} {
				if f.value == "" {
					continue
				}
				if *f.dst, err = parseBytes(f.value); err != nil {
					return fmt.Errorf("%s: %w", f.flag, err)
				}
			}
			c, err := cf.dial()
			if err != nil {
				return err
			}
			defer c.Close()
			ctx, cancel := context.WithTimeout(cmd.Context(), 2*time.Minute)
			defer cancel()
			d, err := c.Deploy(ctx, args[0], module, spec)
			if err != nil {
				return unreachable(err, c.Pools())
			}
			access := "private"
			if d.Public {
				access = "public, as " + d.Owner + "/" + d.Name
			}
			fmt.Fprintf(e.stdout, "deployed %s version %d (%s, %d bytes, sha256 %s, %s)\n", d.Name, d.Version,
				strings.ToLower(strings.TrimPrefix(d.Runtime.String(), "RUNTIME_")), d.ModuleSize, d.ModuleSha256, access)
			return nil
		},
	}
	cf.register(cmd)
	f := cmd.Flags()
	f.StringVar(&runtime, "runtime", "", "wasm or starlark (default: from the file's extension or contents)")
	f.StringVar(&spec.Export, "export", "", "the plugin export or Starlark function to call (default: NAME)")
	f.StringVar(&memory, "memory", "", "memory limit per instance, e.g. 64MiB (default: the operator's)")
	f.DurationVar(&spec.Timeout, "timeout", 0, "time limit per call, e.g. 5s (default: the operator's)")
	f.IntVar(&spec.Concurrency, "concurrency", 0, "instances per worker (default: the operator's)")
	f.StringVar(&maxIn, "max-input", "", "largest input per call, e.g. 1MiB")
	f.StringVar(&out, "max-output", "", "largest output per call, e.g. 1MiB")
	f.BoolVar(&spec.Idempotent, "idempotent", false, "calls may be retried on another worker if theirs dies")
	f.BoolVar(&spec.Public, "public", false, "let every user call the function (as YOU/NAME); default: only you, admins and the users you grant it to")
	f.StringArrayVar(&spec.AllowHosts, "allow-host", nil, "where the function may send requests, through the pool: scheme://host-glob[:port] (repeatable; none: nowhere)")
	f.StringArrayVar(&spec.Secrets, "secret", nil, "your secret the function may read: granted at deploy (repeatable; see taskworker secret grant)")
	cmd.AddCommand(rollbackCommand(e), historyCommand(e))
	return cmd
}

func rollbackCommand(e *env) *cobra.Command {
	var (
		cf      clientFlags
		version int64
	)
	cmd := &cobra.Command{
		Use:   "rollback NAME",
		Short: "Make the previous (or --version N) version of a deployed function current",
		Args:  namedArgs(cobra.ExactArgs(1), qualifiedFunctionArg),
		RunE: cf.run(func(cmd *cobra.Command, args []string, c *taskworker.Client) error {
			d, err := c.Rollback(cmd.Context(), args[0], version)
			if err != nil {
				return err
			}
			fmt.Fprintf(e.stdout, "%s is at version %d\n", d.Name, d.Version)
			return nil
		}),
	}
	cf.register(cmd)
	cmd.Flags().Int64Var(&version, "version", 0, "the version to make current (default: the one before)")
	return cmd
}

func historyCommand(e *env) *cobra.Command {
	var cf clientFlags
	cmd := &cobra.Command{
		Use:   "history NAME",
		Short: "List a deployed function's versions",
		Args:  namedArgs(cobra.ExactArgs(1), qualifiedFunctionArg),
		RunE: cf.run(func(cmd *cobra.Command, args []string, c *taskworker.Client) error {
			resp, err := v1.NewDeployServiceClient(c.Conn()).History(cmd.Context(), &v1.HistoryRequest{Name: args[0]})
			if err != nil {
				return err
			}
			tw := tabwriter.NewWriter(e.stdout, 0, 4, 2, ' ', 0)
			fmt.Fprintln(tw, "VERSION\tCURRENT\tRUNTIME\tSIZE\tSHA256\tDEPLOYED\tBY\tPUBLIC")
			for _, d := range resp.Versions {
				cur := ""
				if d.Version == resp.CurrentVersion {
					cur = "*"
				}
				fmt.Fprintf(tw, "%d\t%s\t%s\t%d\t%s\t%s\t%s\t%v\n", d.Version, cur, strings.ToLower(strings.TrimPrefix(d.Runtime.String(), "RUNTIME_")),
					d.ModuleSize, d.ModuleSha256[:12], time.UnixMilli(d.CreatedAtMs).Format(time.RFC3339), d.Owner, d.Public)
			}
			if err := tw.Flush(); err != nil {
				return err
			}
			if len(resp.GrantedUsers) > 0 {
				fmt.Fprintf(e.stdout, "granted to: %s\n", strings.Join(resp.GrantedUsers, ", "))
			}
			return nil
		}),
	}
	cf.register(cmd)
	return cmd
}

func undeployCommand(e *env) *cobra.Command {
	var cf clientFlags
	cmd := &cobra.Command{
		Use:   "undeploy NAME",
		Short: "Remove a deployed function and all its versions",
		Args:  namedArgs(cobra.ExactArgs(1), qualifiedFunctionArg),
		RunE: cf.run(func(cmd *cobra.Command, args []string, c *taskworker.Client) error {
			if err := c.Undeploy(cmd.Context(), args[0]); err != nil {
				return err
			}
			fmt.Fprintf(e.stdout, "undeployed %s\n", args[0])
			return nil
		}),
	}
	cf.register(cmd)
	return cmd
}

// parseBytes reads sizes like 64MiB, 512KiB, 1GiB, 1000 (bytes).
func parseBytes(s string) (int64, error) {
	units := []struct {
		suffix string
		mult   int64
	}{{"GiB", 1 << 30}, {"MiB", 1 << 20}, {"KiB", 1 << 10}, {"GB", 1e9}, {"MB", 1e6}, {"KB", 1e3}, {"B", 1}}
	mult := int64(1)
	num := strings.TrimSpace(s)
	for _, u := range units {
		if strings.HasSuffix(num, u.suffix) {
			num, mult = strings.TrimSpace(strings.TrimSuffix(num, u.suffix)), u.mult
			break
		}
	}
	n, err := strconv.ParseInt(num, 10, 64)
	if err != nil || n < 0 || n > (1<<62)/mult {
		return 0, fmt.Errorf("%q is not a size like 64MiB, 512KiB or 1000", s)
	}
	return n * mult, nil
}
