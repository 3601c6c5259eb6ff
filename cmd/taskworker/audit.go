package main

import (
	"context"
	"fmt"
	"text/tabwriter"
	"time"

	"github.com/spf13/cobra"

	"github.com/hivemind/taskworker"
	v1 "github.com/hivemind/taskworker/api/taskworker/v1"
	"github.com/hivemind/taskworker/internal/secrets"
)

func auditCommand(e *env) *cobra.Command {
	var (
		cf           clientFlags
		user, secret string
		limit        int64
		asJSON       bool
	)
	cmd := &cobra.Command{
		Use:   "audit",
		Short: "List the reads of your secrets: which function read which version, when, for whom",
		Long: `List the reads of your secrets, newest first: the secret, its version, the
function that read it, the user whose call it was running, and when. A read by
the egress proxy, to put the value in an outbound request, counts as the
function's. Reads are kept for 30 days.`,
		Args: cobra.NoArgs,
		RunE: func(cmd *cobra.Command, args []string) error {
			if err := checkOwner(user); err != nil {
				return err
			}
			if secret != "" {
				if err := checkSecretName(secret); err != nil {
					return err
				}
			}
			if limit < 1 || limit > secrets.MaxAuditLimit {
				return fmt.Errorf("--limit %d: give 1 to %d", limit, secrets.MaxAuditLimit)
			}
			return cf.run(func(cmd *cobra.Command, _ []string, c *taskworker.Client) error {
				ctx, cancel := context.WithTimeout(cmd.Context(), 10*time.Second)
				defer cancel()
				resp, err := v1.NewSecretServiceClient(c.Conn()).Audit(ctx, &v1.AuditRequest{UserId: user, Secret: secret, Limit: limit})
				if err != nil {
					return err
				}
				if asJSON {
					return printJSON(e, resp)
				}
				tw := tabwriter.NewWriter(e.stdout, 0, 4, 2, ' ', 0)
				fmt.Fprintln(tw, "TIME\tSECRET\tVERSION\tFUNCTION\tCALLER")
				for _, ev := range resp.Events {
					fmt.Fprintf(tw, "%s\t%s\t%d\t%s\t%s\n", formatMillis(ev.AtMs, "-"), ev.Secret, ev.Version, ev.Function, cellOr(ev.Caller, "-"))
				}
				return tw.Flush()
			})(cmd, args)
		},
	}
	cf.register(cmd)
	ownerFlag(cmd, &user)
	cmd.Flags().StringVar(&secret, "secret", "", "only the reads of this secret")
	cmd.Flags().Int64Var(&limit, "limit", secrets.DefaultAuditLimit, "at most this many reads")
	cmd.Flags().BoolVar(&asJSON, "json", false, "print JSON")
	return cmd
}

func cellOr(s, none string) string {
	if s == "" {
		return none
	}
	return cell(s)
}
