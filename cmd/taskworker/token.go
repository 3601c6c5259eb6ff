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

func tokenCommand(e *env) *cobra.Command {
	cmd := &cobra.Command{
		Use:   "token",
		Short: "Manage API tokens",
	}
	var (
		cf          clientFlags
		user, role  string
		description string
	)
	create := &cobra.Command{
		Use:   "create --user NAME",
		Short: "Make an API token for a user (needs an admin token); prints it once",
		Args:  cobra.NoArgs,
		RunE: func(cmd *cobra.Command, args []string) error {
			r, ok := v1.Role_value["ROLE_"+strings.ToUpper(role)]
			if !ok || r == 0 {
				return fmt.Errorf("unknown role %q: use user, admin or worker", role)
			}
			if err := names.User(user); err != nil {
				return fmt.Errorf("--user: %w", err)
			}
			return cf.run(func(cmd *cobra.Command, _ []string, c *taskworker.Client) error {
				return createToken(cmd, c, e, user, v1.Role(r), description)
			})(cmd, args)
		},
	}
	cf.register(create)
	create.Flags().StringVar(&user, "user", "", "the user the token acts as (required)")
	create.Flags().StringVar(&role, "role", "user", "user, admin, or worker (a join token for workers)")
	create.Flags().StringVar(&description, "description", "", "a note kept with the token")
	_ = create.MarkFlagRequired("user")
	cmd.AddCommand(create)
	return cmd
}

func createToken(cmd *cobra.Command, c *taskworker.Client, e *env, user string, role v1.Role, description string) error {
	ctx, cancel := context.WithTimeout(cmd.Context(), 10*time.Second)
	defer cancel()
	resp, err := v1.NewAdminServiceClient(c.Conn()).CreateToken(ctx, &v1.CreateTokenRequest{
		User: user, Role: role, Description: description,
	})
	if err != nil {
		return err
	}
	fmt.Fprintln(e.stdout, resp.Token)
	return nil
}
