package main

import (
	"context"
	"fmt"
	"strings"
	"time"

	"github.com/spf13/cobra"

	"github.com/hivemind/taskworker"
	v1 "github.com/hivemind/taskworker/api/taskworker/v1"
	"github.com/hivemind/taskworker/internal/egress"
	"github.com/hivemind/taskworker/internal/names"
)

func fetchCommand(e *env) *cobra.Command {
	var (
		cf                     clientFlags
		user, method, function string
		data                   string
		allow, headers         []string
		include                bool
	)
	cmd := &cobra.Command{
		Use:   "fetch URL",
		Short: "Make an HTTP request through the pool's egress proxy, to try a policy by hand",
		Long: `Make an HTTP request the way function code does: through the pool, allowed only
toward the --allow-host rules given (as 'deploy --allow-host' takes them), and
only to public addresses unless the pool's operator allowed a network
(--egress-allow-net). Redirects are followed, each checked again. A refusal
names the rule that refused and what would allow it.

With --function, the request is tried as that function of yours: a header
value may hold {{secret:NAME}}, which the pool replaces with the secret's
value toward the hosts the function's grant names ('secret grant --host'), and
redacts from the answer (the read is recorded in 'taskworker audit'). A grant
without --host follows the function's deployed --allow-host rules, which only
its calls carry: tried by hand, it sends the value nowhere.

The answer's body goes to standard output; its status, final URL and the
number of requests made to standard error. --include prints the headers
before the body.`,
		Example: `  taskworker fetch https://api.example.com/v1/items --allow-host https://api.example.com
  taskworker fetch https://api.example.com/v1/me --allow-host https://api.example.com \
      --function fetch-prices --header 'Authorization: Bearer {{secret:EXTERNAL_API_KEY}}'`,
		Args: cobra.ExactArgs(1),
		RunE: func(cmd *cobra.Command, args []string) error {
			if err := checkOwner(user); err != nil {
				return err
			}
			if function != "" {
				if err := names.Function(function); err != nil {
					return fmt.Errorf("--function: %w", err)
				}
			}
			for _, a := range allow {
				if _, err := egress.ParseRule(a); err != nil {
					return fmt.Errorf("--allow-host: %w", err)
				}
			}
			req := &v1.FetchRequest{UserId: user, Method: strings.ToUpper(method), Url: args[0], AllowHosts: allow, Function: function, Body: []byte(data)}
			for _, h := range headers {
				name, value, ok := strings.Cut(h, ":")
				if !ok || strings.TrimSpace(name) == "" {
					return fmt.Errorf("--header %q: write it as Name: value", names.Truncate(h, 40))
				}
				req.Headers = append(req.Headers, &v1.HTTPHeader{Name: strings.TrimSpace(name), Value: strings.TrimSpace(value)})
			}
			return cf.run(func(cmd *cobra.Command, _ []string, c *taskworker.Client) error {
				ctx, cancel := context.WithTimeout(cmd.Context(), 2*time.Minute)
				defer cancel()
				resp, err := v1.NewEgressServiceClient(c.Conn()).Fetch(ctx, req)
				if err != nil {
					return err
				}
				fmt.Fprintf(e.stderr, "%s from %s (%d requests)\n", resp.Status, resp.Url, resp.Requests)
				if include {
					for _, h := range resp.Headers {
						fmt.Fprintf(e.stdout, "%s: %s\n", h.Name, h.Value)
					}
					fmt.Fprintln(e.stdout)
				}
				_, err = e.stdout.Write(resp.Body)
				return err
			})(cmd, args)
		},
	}
	cf.register(cmd)
	ownerFlag(cmd, &user)
	fl := cmd.Flags()
	fl.StringArrayVar(&allow, "allow-host", nil, "a destination the request may reach, such as https://api.example.com or https://*.example.com (repeatable)")
	fl.StringArrayVarP(&headers, "header", "H", nil, "a request header, Name: value (repeatable)")
	fl.StringVarP(&method, "request", "X", "GET", "the HTTP method")
	fl.StringVarP(&data, "data", "d", "", "the request body")
	fl.StringVar(&function, "function", "", "try the request as this function of yours, with its secret grants")
	fl.BoolVarP(&include, "include", "i", false, "print the answer's headers before its body")
	return cmd
}
