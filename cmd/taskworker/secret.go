package main

import (
	"bytes"
	"context"
	"errors"
	"fmt"
	"io"
	"os"
	"strings"
	"text/tabwriter"
	"time"

	"github.com/spf13/cobra"

	"github.com/hivemind/taskworker"
	v1 "github.com/hivemind/taskworker/api/taskworker/v1"
	"github.com/hivemind/taskworker/internal/names"
	"github.com/hivemind/taskworker/internal/secrets"
)

func secretCommand(e *env) *cobra.Command {
	cmd := &cobra.Command{
		Use:   "secret",
		Short: "Manage your secrets and which functions may use them: put, ls, rm, grant, revoke",
		Long: `Secrets are values your functions use (API keys, passwords) without them
being in their code. The pool keeps them encrypted, versioned, and hands one to
a function only during a call and only under a grant; every read is recorded
('taskworker audit'). No command prints a value: once put, a value is out of
reach of everyone but the functions it is granted to.`,
	}
	cmd.AddCommand(secretPutCommand(e), secretListCommand(e), secretRemoveCommand(e), secretGrantCommand(e), secretRevokeCommand(e))
	return cmd
}

// ownerFlag is --user: the user a command acts for (admins only).
func ownerFlag(cmd *cobra.Command, user *string) {
	cmd.Flags().StringVar(user, "user", "", "act for this user (an admin token only; default the token's user)")
}

func checkOwner(user string) error {
	if user == "" {
		return nil
	}
	if err := names.User(user); err != nil {
		return fmt.Errorf("--user: %w", err)
	}
	return nil
}

func checkSecretName(name string) error {
	if err := names.Secret(name); err != nil {
		return fmt.Errorf("secret name: %w", err)
	}
	return nil
}

// readValue reads a secret's value from path, or from stdin (dropping one
// trailing newline, which echo and here-documents add) when path is empty.
func readValue(e *env, path string) ([]byte, error) {
	var (
		value []byte
		err   error
	)
	if path != "" {
		value, err = os.ReadFile(path)
		if err != nil {
			return nil, fmt.Errorf("--from-file: %w", err)
		}
	} else {
		if f, ok := e.stdin.(*os.File); ok {
			if st, err := f.Stat(); err == nil && st.Mode()&os.ModeCharDevice != 0 {
				fmt.Fprintln(e.stderr, "reading the value from standard input; end it with Ctrl-D")
			}
		}
		value, err = io.ReadAll(io.LimitReader(e.stdin, secrets.MaxValueBytes+2))
		if err != nil {
			return nil, fmt.Errorf("reading the value from standard input: %w", err)
		}
		value = bytes.TrimSuffix(value, []byte("\n"))
		value = bytes.TrimSuffix(value, []byte("\r"))
	}
	switch {
	case len(value) == 0:
		return nil, errors.New("the value is empty: pipe it on standard input (taskworker secret put NAME < file) or give --from-file")
	case len(value) > secrets.MaxValueBytes:
		return nil, fmt.Errorf("the value is over %d bytes, the most a secret holds", secrets.MaxValueBytes)
	}
	return value, nil
}

func secretPutCommand(e *env) *cobra.Command {
	var (
		cf         clientFlags
		user, path string
	)
	cmd := &cobra.Command{
		Use:   "put NAME",
		Short: "Store a new version of a secret; the value comes from standard input or --from-file",
		Long: `Store a new version of a secret, creating it if needed; functions granted it
read the new version from their next call. The value is read from standard
input (one trailing newline dropped) or, byte for byte, from --from-file;
never from the command line, where it would stay in the shell's history and in
the process list. A secret keeps its last 10 versions.`,
		Example: `  taskworker secret put EXTERNAL_API_KEY < key.txt
  printf %s "$KEY" | taskworker secret put EXTERNAL_API_KEY
  taskworker secret put TLS_KEY --from-file server.key`,
		Args: cobra.ExactArgs(1),
		RunE: func(cmd *cobra.Command, args []string) error {
			if err := checkSecretName(args[0]); err != nil {
				return err
			}
			if err := checkOwner(user); err != nil {
				return err
			}
			value, err := readValue(e, path)
			if err != nil {
				return err
			}
			return cf.run(func(cmd *cobra.Command, args []string, c *taskworker.Client) error {
				ctx, cancel := context.WithTimeout(cmd.Context(), 10*time.Second)
				defer cancel()
				resp, err := v1.NewSecretServiceClient(c.Conn()).Put(ctx, &v1.PutSecretRequest{UserId: user, Name: args[0], Value: value})
				if err != nil {
					return err
				}
				fmt.Fprintf(e.stdout, "secret %s: version %d\n", resp.Name, resp.Version)
				return nil
			})(cmd, args)
		},
	}
	cf.register(cmd)
	ownerFlag(cmd, &user)
	cmd.Flags().StringVar(&path, "from-file", "", "read the value from this file, byte for byte")
	return cmd
}

// formatGrants writes a secret's grants on one line: f, g (to https://api.example.com).
func formatGrants(gs []*v1.SecretGrant) string {
	if len(gs) == 0 {
		return "-"
	}
	out := make([]string, len(gs))
	for i, g := range gs {
		out[i] = g.Function
		if len(g.Hosts) > 0 {
			out[i] += " (to " + strings.Join(g.Hosts, " ") + ")"
		}
	}
	return strings.Join(out, ", ")
}

func secretListCommand(e *env) *cobra.Command {
	var (
		cf     clientFlags
		user   string
		asJSON bool
	)
	cmd := &cobra.Command{
		Use:   "ls",
		Short: "List your secrets: names, versions, grants (never values)",
		Long: `List your secrets: each one's current version, the versions kept, the
functions granted it (with the only hosts its value may be sent to, for a grant
made with --host), and when it last changed.`,
		Args: cobra.NoArgs,
		RunE: func(cmd *cobra.Command, args []string) error {
			if err := checkOwner(user); err != nil {
				return err
			}
			return cf.run(func(cmd *cobra.Command, _ []string, c *taskworker.Client) error {
				ctx, cancel := context.WithTimeout(cmd.Context(), 10*time.Second)
				defer cancel()
				resp, err := v1.NewSecretServiceClient(c.Conn()).List(ctx, &v1.ListSecretsRequest{UserId: user})
				if err != nil {
					return err
				}
				if asJSON {
					return printJSON(e, resp)
				}
				tw := tabwriter.NewWriter(e.stdout, 0, 4, 2, ' ', 0)
				fmt.Fprintln(tw, "NAME\tVERSION\tKEPT\tUPDATED\tGRANTS")
				for _, s := range resp.Secrets {
					current := int64(0)
					if n := len(s.Versions); n > 0 {
						current = s.Versions[n-1]
					}
					fmt.Fprintf(tw, "%s\t%d\t%d\t%s\t%s\n", s.Name, current, len(s.Versions), formatMillis(s.UpdatedAtMs, "-"), formatGrants(s.Grants))
				}
				return tw.Flush()
			})(cmd, args)
		},
	}
	cf.register(cmd)
	ownerFlag(cmd, &user)
	cmd.Flags().BoolVar(&asJSON, "json", false, "print JSON")
	return cmd
}

func secretRemoveCommand(e *env) *cobra.Command {
	var (
		cf   clientFlags
		user string
	)
	cmd := &cobra.Command{
		Use:   "rm NAME",
		Short: "Delete a secret, every version and every grant",
		Long: `Delete a secret with every version and grant. Functions that use it fail to
read it from their next call on; values they already read stay read.`,
		Args: cobra.ExactArgs(1),
		RunE: func(cmd *cobra.Command, args []string) error {
			if err := checkSecretName(args[0]); err != nil {
				return err
			}
			if err := checkOwner(user); err != nil {
				return err
			}
			return cf.run(func(cmd *cobra.Command, args []string, c *taskworker.Client) error {
				ctx, cancel := context.WithTimeout(cmd.Context(), 10*time.Second)
				defer cancel()
				if _, err := v1.NewSecretServiceClient(c.Conn()).Delete(ctx, &v1.DeleteSecretRequest{UserId: user, Name: args[0]}); err != nil {
					return err
				}
				fmt.Fprintf(e.stdout, "deleted secret %s\n", args[0])
				return nil
			})(cmd, args)
		},
	}
	cf.register(cmd)
	ownerFlag(cmd, &user)
	return cmd
}

func secretGrantCommand(e *env) *cobra.Command {
	var (
		cf             clientFlags
		user, function string
		hosts          []string
	)
	cmd := &cobra.Command{
		Use:   "grant NAME --function F [--host RULE]...",
		Short: "Let one of your functions use a secret",
		Long: `Let one of your functions use a secret during its calls. Without --host, the
function may read the value, and have the egress proxy put it in requests
({{secret:NAME}} in a header or query value) toward any host its own
--allow-host rules allow. With --host (a rule as --allow-host takes it, such as
https://api.example.com), the value goes only to those hosts, put in by the
proxy: the function never sees it. Granting again replaces the hosts.`,
		Example: `  taskworker secret grant EXTERNAL_API_KEY --function fetch-prices --host https://api.example.com
  taskworker secret grant DB_PASSWORD --function report`,
		Args: cobra.ExactArgs(1),
		RunE: func(cmd *cobra.Command, args []string) error {
			if err := checkSecretName(args[0]); err != nil {
				return err
			}
			if err := checkOwner(user); err != nil {
				return err
			}
			if function == "" {
				return errors.New("--function is required: the function that may use the secret")
			}
			if err := names.Function(function); err != nil {
				return fmt.Errorf("--function: %w", err)
			}
			return cf.run(func(cmd *cobra.Command, args []string, c *taskworker.Client) error {
				ctx, cancel := context.WithTimeout(cmd.Context(), 10*time.Second)
				defer cancel()
				resp, err := v1.NewSecretServiceClient(c.Conn()).Grant(ctx, &v1.GrantSecretRequest{UserId: user, Name: args[0], Function: function, Hosts: hosts})
				if err != nil {
					return err
				}
				fmt.Fprintf(e.stdout, "secret %s: granted to %s\n", resp.Secret.Name, formatGrants(resp.Secret.Grants))
				return nil
			})(cmd, args)
		},
	}
	cf.register(cmd)
	ownerFlag(cmd, &user)
	cmd.Flags().StringVar(&function, "function", "", "the function that may use the secret (required)")
	cmd.Flags().StringArrayVar(&hosts, "host", nil, "send the value only to this destination, as an --allow-host rule (repeatable)")
	return cmd
}

func secretRevokeCommand(e *env) *cobra.Command {
	var (
		cf             clientFlags
		user, function string
	)
	cmd := &cobra.Command{
		Use:   "revoke NAME --function F",
		Short: "Take a function's grant of a secret away",
		Long: `Take a function's grant of a secret away: its next read of the secret fails.
Values it already read stay read; put a new version to make them useless.`,
		Args: cobra.ExactArgs(1),
		RunE: func(cmd *cobra.Command, args []string) error {
			if err := checkSecretName(args[0]); err != nil {
				return err
			}
			if err := checkOwner(user); err != nil {
				return err
			}
			if function == "" {
				return errors.New("--function is required: the function whose grant to revoke")
			}
			if err := names.Function(function); err != nil {
				return fmt.Errorf("--function: %w", err)
			}
			return cf.run(func(cmd *cobra.Command, args []string, c *taskworker.Client) error {
				ctx, cancel := context.WithTimeout(cmd.Context(), 10*time.Second)
				defer cancel()
				resp, err := v1.NewSecretServiceClient(c.Conn()).Revoke(ctx, &v1.RevokeSecretRequest{UserId: user, Name: args[0], Function: function})
				if err != nil {
					return err
				}
				fmt.Fprintf(e.stdout, "secret %s: revoked from %s; granted to %s\n", resp.Secret.Name, function, formatGrants(resp.Secret.Grants))
				return nil
			})(cmd, args)
		},
	}
	cf.register(cmd)
	ownerFlag(cmd, &user)
	cmd.Flags().StringVar(&function, "function", "", "the function whose grant to revoke (required)")
	return cmd
}
