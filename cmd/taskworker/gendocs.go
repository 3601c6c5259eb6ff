package main

import (
	"fmt"
	"os"

	"github.com/spf13/cobra"
	"github.com/spf13/cobra/doc"
)

// genDocsCommand writes the CLI reference (docs/cli/) from the command
// tree, so that it cannot drift from the binary: TestCLIReferenceIsCurrent
// fails until it is regenerated.
func genDocsCommand(e *env) *cobra.Command {
	return &cobra.Command{
		Use:    "gen-docs DIR",
		Short:  "Write the CLI reference as Markdown into DIR (docs/cli)",
		Hidden: true,
		Args:   cobra.ExactArgs(1),
		RunE: func(cmd *cobra.Command, args []string) error {
			if err := os.MkdirAll(args[0], 0o755); err != nil {
				return err
			}
			root := cmd.Root()
			root.DisableAutoGenTag = true // no date: the output depends on the code alone
			if err := doc.GenMarkdownTree(root, args[0]); err != nil {
				return err
			}
			fmt.Fprintf(e.stdout, "wrote the CLI reference to %s\n", args[0])
			return nil
		},
	}
}
