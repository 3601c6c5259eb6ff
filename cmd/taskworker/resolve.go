package main

import (
	"context"
	"fmt"
	"time"

	"github.com/spf13/cobra"

	"github.com/hivemind/taskworker"
)

func resolveCommand(e *env) *cobra.Command {
	var cf clientFlags
	cmd := &cobra.Command{
		Use:   "resolve NAME [TYPE]",
		Short: "Resolve a name through the pool's DNS proxy, under the network's policy",
		Long: `Resolve a name the way function code does: through the pool, which leaves out
private, loopback and link-local addresses, and answers the network's own zone
(add.fn.taskworker.internal: the pools serving the function 'add'). TYPE is A,
AAAA, CNAME, TXT or SRV; without it, A and AAAA. Prints one answer per line,
then the time the answers may be kept.`,
		Example: `  taskworker resolve add.fn.taskworker.internal
  taskworker resolve _taskworker._tcp.add.fn.taskworker.internal SRV
  taskworker resolve example.org AAAA`,
		Args: cobra.RangeArgs(1, 2),
		RunE: cf.run(func(cmd *cobra.Command, args []string, c *taskworker.Client) error {
			ctx, cancel := context.WithTimeout(cmd.Context(), 10*time.Second)
			defer cancel()
			recordType := ""
			if len(args) == 2 {
				recordType = args[1]
			}
			answers, ttl, err := c.Resolve(ctx, args[0], recordType)
			if err != nil {
				return err
			}
			for _, a := range answers {
				fmt.Fprintln(e.stdout, a)
			}
			fmt.Fprintf(e.stderr, "ttl %s\n", ttl)
			return nil
		}),
	}
	cf.register(cmd)
	return cmd
}
