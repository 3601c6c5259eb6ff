package main

import (
	"context"
	"fmt"
	"strings"
	"time"

	"github.com/spf13/cobra"

	"github.com/hivemind/taskworker"
	v1 "github.com/hivemind/taskworker/api/taskworker/v1"
)

func keysCommand(e *env) *cobra.Command {
	cmd := &cobra.Command{
		Use:   "keys",
		Short: "Manage the pool's master keys: rotate (needs an admin token)",
	}
	cmd.AddCommand(keysRotateCommand(e))
	return cmd
}

func keysRotateCommand(e *env) *cobra.Command {
	var (
		cf         clientFlags
		rewrapOnly bool
	)
	cmd := &cobra.Command{
		Use:   "rotate",
		Short: "Make a new master key current and rewrap every data key under it",
		Long: `Make a new master key current on the pool that answers, then rewrap every data
key (of secrets and of file versions) under it. Values and files are not
re-encrypted: only their keys are. Older master keys stay in the key file, so
that anything not yet rewrapped still opens.

Afterwards, copy the pool's key file (printed) to every other pool replica,
which would otherwise fail to open what the new key wraps. If a store fails to
rewrap, the command says which and exits 1; run it again with --rewrap-only to
finish without making another key.`,
		Args: cobra.NoArgs,
		RunE: cf.run(func(cmd *cobra.Command, _ []string, c *taskworker.Client) error {
			// Rewrapping reads and writes every data key: give it time.
			ctx, cancel := context.WithTimeout(cmd.Context(), 10*time.Minute)
			defer cancel()
			resp, err := v1.NewKeyServiceClient(c.Conn()).RotateKeys(ctx, &v1.RotateKeysRequest{RewrapOnly: rewrapOnly})
			if err != nil {
				return err
			}
			fmt.Fprintf(e.stdout, "current master key: %s (held: %s)\n", resp.CurrentKeyId, strings.Join(resp.KeyIds, ", "))
			failed := 0
			for _, r := range resp.Rewrapped {
				if r.Error != "" {
					failed++
					fmt.Fprintf(e.stdout, "%s: %d data keys rewrapped, then failed: %s\n", r.Store, r.Keys, r.Error)
					continue
				}
				fmt.Fprintf(e.stdout, "%s: %d data keys rewrapped\n", r.Store, r.Keys)
			}
			fmt.Fprintf(e.stdout, "key file: %s; copy it to every other pool replica\n", resp.KeyFile)
			if failed > 0 {
				return fmt.Errorf("%d stores did not finish rewrapping: run 'taskworker keys rotate --rewrap-only' again once the cause is fixed", failed)
			}
			return nil
		}),
	}
	cf.register(cmd)
	cmd.Flags().BoolVar(&rewrapOnly, "rewrap-only", false, "rewrap under the current master key without making a new one")
	return cmd
}
