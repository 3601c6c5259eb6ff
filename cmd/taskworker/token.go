package main

import (
	"context"
	"errors"
	"fmt"
	"strings"
	"text/tabwriter"
	"time"

	"github.com/spf13/cobra"

	"github.com/hivemind/taskworker"
	v1 "github.com/hivemind/taskworker/api/taskworker/v1"
	"github.com/hivemind/taskworker/internal/auth"
	"github.com/hivemind/taskworker/internal/names"
)

func tokenCommand(e *env) *cobra.Command {
	cmd := &cobra.Command{
		Use:   "token",
		Short: "Manage API tokens: create, ls, revoke (needs an admin token)",
	}
	cmd.AddCommand(tokenCreateCommand(e), tokenListCommand(e), tokenRevokeCommand(e))
	return cmd
}

// tokenRequest is what create's flags ask for, checked before anything is
// dialed.
type tokenRequest struct {
	user, role, description string
	join, force             bool
	ttl                     time.Duration
	uses                    int64
}

func (f tokenRequest) build() (*v1.CreateTokenRequest, error) {
	role := strings.ToLower(f.role)
	if f.join {
		if role != "" && role != "worker" {
			return nil, fmt.Errorf("--join makes a token with role worker; drop --role %s", f.role)
		}
		role = "worker"
		if f.user == "" {
			f.user = auth.JoinUser
		}
	}
	if role == "" {
		role = "user"
	}
	r, ok := v1.Role_value["ROLE_"+strings.ToUpper(role)]
	if !ok || r == 0 {
		return nil, fmt.Errorf("unknown role %q: use user, admin or worker", f.role)
	}
	if f.user == "" {
		return nil, errors.New("--user is required (or --join for a join token)")
	}
	if err := names.User(f.user); err != nil {
		return nil, fmt.Errorf("--user: %w", err)
	}
	if err := auth.CheckReserved(f.user, v1.Role(r), f.force); err != nil {
		return nil, fmt.Errorf("--user: %w (--force)", err)
	}
	switch {
	case f.ttl < 0:
		return nil, fmt.Errorf("--ttl %s: give a positive duration such as 1h or 720h, or 0 for no expiry", f.ttl)
	case f.ttl > 0 && f.ttl < time.Millisecond:
		return nil, fmt.Errorf("--ttl %s: the shortest lifetime is 1ms", f.ttl)
	case f.uses < 0:
		return nil, fmt.Errorf("--uses %d: give a positive count, or 0 for no limit", f.uses)
	case f.uses > 0 && v1.Role(r) != v1.Role_ROLE_WORKER:
		return nil, errors.New("--uses limits join tokens only (--join): an API token is used by every call, so give it --ttl instead")
	}
	return &v1.CreateTokenRequest{User: f.user, Role: v1.Role(r), Description: f.description,
		TtlMs: f.ttl.Milliseconds(), MaxUses: f.uses, Force: f.force}, nil
}

func tokenCreateCommand(e *env) *cobra.Command {
	var (
		cf clientFlags
		f  tokenRequest
	)
	cmd := &cobra.Command{
		Use:   "create (--user NAME | --join)",
		Short: "Make an API token for a user, or a join token for workers; prints it once",
		Long: `Make a token and print it on standard output, once: the pool keeps only its
hash. Its id, which 'token ls' shows and 'token revoke' takes, goes to
standard error.

An API token acts as one user with one role (--role user or admin). A join
token (--join, role worker) lets workers join the network; --uses limits how
many. --ttl makes either expire. The user names admin and worker belong to the
pool's own tokens: a token for them with another role is refused unless
--force, since it would act on that user's files and functions.`,
		Example: `  taskworker token create --user alice --ttl 720h --description "alice's laptop"
  taskworker token create --join --ttl 1h --uses 5`,
		Args: cobra.NoArgs,
		RunE: func(cmd *cobra.Command, args []string) error {
			req, err := f.build()
			if err != nil {
				return err
			}
			return cf.run(func(cmd *cobra.Command, _ []string, c *taskworker.Client) error {
				return createToken(cmd, c, e, req)
			})(cmd, args)
		},
	}
	cf.register(cmd)
	fl := cmd.Flags()
	fl.StringVar(&f.user, "user", "", "the user the token acts as (required, except with --join)")
	fl.StringVar(&f.role, "role", "", "user, admin, or worker (default user; worker with --join)")
	fl.BoolVar(&f.join, "join", false, "a join token for workers (role worker, user worker unless --user)")
	fl.DurationVar(&f.ttl, "ttl", 0, "how long the token is valid, e.g. 1h or 720h (default: until revoked)")
	fl.Int64Var(&f.uses, "uses", 0, "join tokens: how many workers may join with it (default: no limit)")
	fl.BoolVar(&f.force, "force", false, "give a reserved user name (admin, worker) a role other than its own")
	fl.StringVar(&f.description, "description", "", "a note kept with the token, shown by 'token ls'")
	return cmd
}

func createToken(cmd *cobra.Command, c *taskworker.Client, e *env, req *v1.CreateTokenRequest) error {
	ctx, cancel := context.WithTimeout(cmd.Context(), 10*time.Second)
	defer cancel()
	resp, err := v1.NewAdminServiceClient(c.Conn()).CreateToken(ctx, req)
	if err != nil {
		return err
	}
	fmt.Fprintln(e.stdout, resp.Token)
	fmt.Fprintf(e.stderr, "token %s for user %s, role %s, expires %s\n", resp.Id, resp.User, auth.RoleName(resp.Role), formatMillis(resp.ExpiresAtMs, "never"))
	return nil
}

func tokenListCommand(e *env) *cobra.Command {
	var (
		cf     clientFlags
		user   string
		asJSON bool
	)
	cmd := &cobra.Command{
		Use:   "ls",
		Short: "List the network's tokens (never their secrets)",
		Long: `List every token: its id (the start of its hash, not the token), user, role,
creation, expiry, last use and, for join tokens, workers joined with it. Last
use is recorded at most once a minute per token and pool, so it may be a minute
behind.`,
		Args: cobra.NoArgs,
		RunE: cf.run(func(cmd *cobra.Command, _ []string, c *taskworker.Client) error {
			if user != "" {
				if err := names.User(user); err != nil {
					return fmt.Errorf("--user: %w", err)
				}
			}
			ctx, cancel := context.WithTimeout(cmd.Context(), 10*time.Second)
			defer cancel()
			resp, err := v1.NewAdminServiceClient(c.Conn()).ListTokens(ctx, &v1.ListTokensRequest{User: user})
			if err != nil {
				return err
			}
			if asJSON {
				return printJSON(e, resp)
			}
			now := time.Now()
			tw := tabwriter.NewWriter(e.stdout, 0, 4, 2, ' ', 0)
			fmt.Fprintln(tw, "ID\tUSER\tROLE\tCREATED\tEXPIRES\tLAST USED\tUSES\tDESCRIPTION")
			for _, t := range resp.Tokens {
				expires := formatMillis(t.ExpiresAtMs, "never")
				if t.ExpiresAtMs != 0 && now.UnixMilli() >= t.ExpiresAtMs {
					expires += " (expired)"
				}
				uses := "-"
				switch {
				case t.MaxUses > 0:
					uses = fmt.Sprintf("%d/%d", t.Uses, t.MaxUses)
				case t.Role == v1.Role_ROLE_WORKER:
					uses = fmt.Sprint(t.Uses)
				}
				fmt.Fprintf(tw, "%s\t%s\t%s\t%s\t%s\t%s\t%s\t%s\n", t.Id, t.User, auth.RoleName(t.Role),
					formatMillis(t.CreatedAtMs, "-"), expires, formatMillis(t.LastUsedMs, "never"), uses, cell(t.Description))
			}
			return tw.Flush()
		}),
	}
	cf.register(cmd)
	cmd.Flags().StringVar(&user, "user", "", "only this user's tokens")
	cmd.Flags().BoolVar(&asJSON, "json", false, "print JSON")
	return cmd
}

func tokenRevokeCommand(e *env) *cobra.Command {
	var cf clientFlags
	cmd := &cobra.Command{
		Use:   "revoke ID",
		Short: "Revoke a token by its id (from 'token ls'); every pool refuses it at once",
		Long: `Revoke a token by its id, as 'token ls' shows it. Every pool refuses it within
moments, and streams it opened (watches, downloads) end. Revoking a pool's own
admin.token or join.token is permanent: that pool then refuses to start until
the file is deleted, when it makes a new one.`,
		Args: cobra.ExactArgs(1),
		RunE: func(cmd *cobra.Command, args []string) error {
			if err := auth.ValidateID(args[0]); err != nil {
				return err
			}
			return cf.run(func(cmd *cobra.Command, args []string, c *taskworker.Client) error {
				ctx, cancel := context.WithTimeout(cmd.Context(), 10*time.Second)
				defer cancel()
				resp, err := v1.NewAdminServiceClient(c.Conn()).RevokeToken(ctx, &v1.RevokeTokenRequest{Id: args[0]})
				if err != nil {
					return err
				}
				fmt.Fprintf(e.stdout, "revoked token %s of user %s (role %s)\n", resp.Token.Id, resp.Token.User, auth.RoleName(resp.Token.Role))
				return nil
			})(cmd, args)
		},
	}
	cf.register(cmd)
	return cmd
}

// formatMillis writes Unix milliseconds as a UTC time to the second, or
// zero as none.
func formatMillis(ms int64, none string) string {
	if ms == 0 {
		return none
	}
	return time.UnixMilli(ms).UTC().Format("2006-01-02 15:04:05Z")
}

// cell keeps a description on its row.
func cell(s string) string {
	return names.Truncate(strings.Join(strings.Fields(s), " "), 60)
}
