package main

import (
	"context"
	"encoding/json"
	"fmt"
	"time"

	"github.com/spf13/cobra"

	"github.com/hivemind/taskworker"
)

func callCommand(e *env) *cobra.Command {
	var (
		cf      clientFlags
		timeout time.Duration
	)
	cmd := &cobra.Command{
		Use:   "call NAME [ARG...]",
		Short: "Call a function and print its JSON result",
		Long: `Call a function through the pool and print its result as JSON.
Each ARG is taken as JSON when it parses (1, true, [1,2], {"a":1}, "quoted"),
else as a string: taskworker call add 1 2 prints 3.`,
		Example: `  taskworker call add 1 2
  taskworker call echo '{"x": [1, 2]}'
  taskworker call hello`,
		Args: cobra.MinimumNArgs(1),
		RunE: cf.run(func(cmd *cobra.Command, args []string, c *taskworker.Client) error {
			ctx, cancel := context.WithTimeout(cmd.Context(), timeout)
			defer cancel()
			result, err := c.CallJSON(ctx, args[0], cliArgs(args[1:]))
			if err != nil {
				return err
			}
			fmt.Fprintln(e.stdout, string(result))
			return nil
		}),
	}
	cf.register(cmd)
	cmd.Flags().DurationVar(&timeout, "timeout", 30*time.Second, "give up after this long (the function sees the deadline)")
	return cmd
}

// cliArgs turns command-line words into a JSON array: each word as JSON when
// it is valid JSON, else as a string.
func cliArgs(words []string) []byte {
	vals := make([]json.RawMessage, len(words))
	for i, w := range words {
		if json.Valid([]byte(w)) {
			vals[i] = json.RawMessage(w)
		} else {
			vals[i], _ = json.Marshal(w)
		}
	}
	b, _ := json.Marshal(vals)
	return b
}
