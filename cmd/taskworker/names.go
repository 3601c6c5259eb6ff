package main

import (
	"github.com/spf13/cobra"

	"github.com/hivemind/taskworker/internal/names"
)

// namedArgs checks the count of a command's arguments with count, then each
// argument at a position of check (-1: every argument from the last listed
// position on) with the rule the pool applies (package names), so a bad
// name fails before anything is dialed or read.
func namedArgs(count cobra.PositionalArgs, check ...func(string) error) cobra.PositionalArgs {
	return func(cmd *cobra.Command, args []string) error {
		if err := count(cmd, args); err != nil {
			return err
		}
		for i, a := range args {
			c := check[min(i, len(check)-1)]
			if c == nil {
				continue
			}
			if err := c(a); err != nil {
				return err
			}
		}
		return nil
	}
}

var (
	functionArg = names.Function
	fileIDArg   = names.FileID
)

// qualifiedFunctionArg is a function as callers name it: NAME, or
// OWNER/NAME for another user's deployed function.
func qualifiedFunctionArg(s string) error {
	_, _, err := names.QualifiedFunction(s)
	return err
}
