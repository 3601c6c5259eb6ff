package main

import (
	"fmt"
	"strings"

	"github.com/spf13/cobra"

	"github.com/hivemind/taskworker"
	"github.com/hivemind/taskworker/internal/names"
)

func grantCommand(e *env) *cobra.Command {
	return grantOrRevoke(e, true)
}

func revokeCommand(e *env) *cobra.Command {
	return grantOrRevoke(e, false)
}

// grantOrRevoke is "grant" (on) or "revoke": one shape, two verbs.
func grantOrRevoke(e *env, on bool) *cobra.Command {
	var (
		cf   clientFlags
		user string
	)
	cmd := &cobra.Command{
		Use:   "grant FUNCTION --user USER",
		Short: "Let a user call a private function you deployed",
		Long: `Let USER call FUNCTION, a function you deployed, which is private otherwise.
USER calls it as YOU/FUNCTION, and sees it in "taskworker functions" without
its module or capabilities; only you (and admins) may change it. An admin
names another user's function as OWNER/FUNCTION.`,
		Example: `  taskworker grant reports --user bob
  taskworker revoke reports --user bob`,
	}
	if !on {
		cmd.Use = "revoke FUNCTION --user USER"
		cmd.Short = "Take a user's grant of a function you deployed away"
		cmd.Long = `Take USER's grant of FUNCTION away: their calls are refused from then on
(calls already running finish). A public function stays callable by everyone:
deploy it again without --public to make it private.`
	}
	cmd.Args = namedArgs(cobra.ExactArgs(1), qualifiedFunctionArg)
	cmd.RunE = cf.run(func(cmd *cobra.Command, args []string, c *taskworker.Client) error {
		if err := names.User(user); err != nil {
			return fmt.Errorf("--user: %w", err)
		}
		grant := c.Grant
		if !on {
			grant = c.Revoke
		}
		users, err := grant(cmd.Context(), args[0], user)
		if err != nil {
			return err
		}
		if len(users) == 0 {
			fmt.Fprintf(e.stdout, "%s is granted to no one\n", args[0])
			return nil
		}
		fmt.Fprintf(e.stdout, "%s is granted to: %s\n", args[0], strings.Join(users, ", "))
		return nil
	})
	cf.register(cmd)
	cmd.Flags().StringVar(&user, "user", "", "the user to grant it to, or take it from")
	_ = cmd.MarkFlagRequired("user")
	return cmd
}
