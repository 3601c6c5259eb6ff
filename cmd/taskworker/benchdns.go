package main

import (
	"context"
	"fmt"
	"time"

	"github.com/spf13/cobra"

	"github.com/hivemind/taskworker"
	v1 "github.com/hivemind/taskworker/api/taskworker/v1"
	"github.com/hivemind/taskworker/internal/bench"
)

func benchDNSCommand(e *env) *cobra.Command {
	var (
		cf               clientFlags
		concurrency      []int
		duration, warmup time.Duration
		zoneName, extern string
	)
	cmd := &cobra.Command{
		Use:   "dns",
		Short: "ResolveDomain through the pool, against the pool's cheapest authenticated RPC",
		Long: `Resolve names through the pool's DNSService at each concurrency for
--duration: a name of the network's zone (--name, answered from the pool's
registry) and a name outside it (--external, after its first answer, so from
the pool's cache). The baseline, in the same run, is AdminService.WhoAmI: an
authenticated RPC that reads nothing, so it costs only the connection, TLS,
the token check and the server's dispatch. Prints each run and its ratios to
the baseline. If the external name does not resolve (the pool's upstream
resolver has no answer for it), its runs are left out and the reason
printed.`,
		Example: `  taskworker bench dns
  taskworker bench dns --external example.com --concurrency 1,64 --duration 5s`,
		Args: cobra.NoArgs,
		RunE: cf.run(func(cmd *cobra.Command, _ []string, c *taskworker.Client) error {
			ctx := cmd.Context()
			admin := v1.NewAdminServiceClient(c.Conn())
			whoami := func(ctx context.Context) error {
				_, err := admin.WhoAmI(ctx, &v1.WhoAmIRequest{})
				return err
			}
			resolve := func(name string) func(context.Context) error {
				return func(ctx context.Context) error {
					addrs, _, err := c.Resolve(ctx, name, "")
					if err == nil && len(addrs) == 0 {
						err = fmt.Errorf("%s: no addresses", name)
					}
					return err
				}
			}
			if err := whoami(ctx); err != nil {
				return fmt.Errorf("a first WhoAmI failed: %w", err)
			}
			runs := []struct {
				target string
				call   func(context.Context) error
			}{{"whoami", whoami}, {"zone", resolve(zoneName)}}
			if err := runs[1].call(ctx); err != nil {
				return fmt.Errorf("resolving %s failed (is a worker serving it? pass --name FUNCTION.ZONE): %w", zoneName, err)
			}
			fmt.Fprintf(e.stdout, "zone name %s, external name %s, %s per run after %s warm-up\n", zoneName, extern, duration, warmup)
			if extern != "" {
				t0 := time.Now()
				if err := resolve(extern)(ctx); err != nil {
					fmt.Fprintf(e.stdout, "external name %s left out: its first answer failed: %s\n", extern, oneLine(err))
				} else {
					fmt.Fprintf(e.stdout, "external name %s: first (uncached) answer in %s\n", extern, time.Since(t0).Round(time.Microsecond))
					runs = append(runs, struct {
						target string
						call   func(context.Context) error
					}{"external", resolve(extern)})
				}
			}
			fmt.Fprintln(e.stdout, bench.Header)
			for _, n := range concurrency {
				results := make([]bench.Result, len(runs))
				for i, r := range runs {
					results[i] = bench.Run(ctx, r.target, n, warmup, duration, r.call)
					fmt.Fprintln(e.stdout, results[i])
				}
				base := results[0]
				for _, r := range results[1:] {
					fmt.Fprintf(e.stdout, "%s/whoami at concurrency %d: calls/s %.2fx, p50 %.2fx, p99 %.2fx\n", r.Target, n,
						r.Rate()/base.Rate(), float64(r.P50)/float64(base.P50), float64(r.P99)/float64(base.P99))
				}
				for _, r := range results {
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
	f.IntSliceVar(&concurrency, "concurrency", []int{1, 64}, "concurrent callers (comma-separated list: one run each)")
	f.DurationVar(&duration, "duration", 5*time.Second, "measured time per run")
	f.DurationVar(&warmup, "warmup", time.Second, "unmeasured time before each run")
	f.StringVar(&zoneName, "name", "add.fn.taskworker.internal", "a name of the network's zone: FUNCTION.ZONE")
	f.StringVar(&extern, "external", "example.com", "a name outside the zone, answered by the pool's upstream resolver (\"\" for none)")
	return cmd
}
