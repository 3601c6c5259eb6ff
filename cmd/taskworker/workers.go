package main

import (
	"context"
	"fmt"
	"strings"
	"text/tabwriter"
	"time"

	"github.com/spf13/cobra"

	"github.com/hivemind/taskworker"
	"google.golang.org/protobuf/encoding/protojson"
	"google.golang.org/protobuf/proto"

	v1 "github.com/hivemind/taskworker/api/taskworker/v1"
)

func workersCommand(e *env) *cobra.Command {
	var (
		cf     clientFlags
		asJSON bool
	)
	cmd := &cobra.Command{
		Use:   "workers",
		Short: "List the live workers",
		Args:  cobra.NoArgs,
		RunE: cf.run(func(cmd *cobra.Command, _ []string, c *taskworker.Client) error {
			ctx, cancel := context.WithTimeout(cmd.Context(), 10*time.Second)
			defer cancel()
			ws, err := c.Workers(ctx)
			if err != nil {
				return err
			}
			if asJSON {
				return printJSON(e, &v1.ListWorkersResponse{Workers: ws})
			}
			tw := tabwriter.NewWriter(e.stdout, 0, 4, 2, ' ', 0)
			fmt.Fprintln(tw, "ID\tADDRESS\tINFLIGHT\tCALLS\tUP\tFUNCTIONS")
			now := time.Now()
			for _, w := range ws {
				names := make([]string, len(w.Functions))
				for i, f := range w.Functions {
					names[i] = f.Name
				}
				up := now.Sub(time.UnixMilli(w.RegisteredAtMs)).Round(time.Second)
				fmt.Fprintf(tw, "%s\t%s\t%d\t%d\t%s\t%s\n", w.WorkerId, w.Address, w.Inflight, w.CallsTotal, up, strings.Join(names, ","))
			}
			return tw.Flush()
		}),
	}
	cf.register(cmd)
	cmd.Flags().BoolVar(&asJSON, "json", false, "print JSON")
	return cmd
}

func functionsCommand(e *env) *cobra.Command {
	var (
		cf     clientFlags
		asJSON bool
	)
	cmd := &cobra.Command{
		Use:   "functions",
		Short: "List the functions the network serves",
		Args:  cobra.NoArgs,
		RunE: cf.run(func(cmd *cobra.Command, _ []string, c *taskworker.Client) error {
			ctx, cancel := context.WithTimeout(cmd.Context(), 10*time.Second)
			defer cancel()
			fs, err := c.Functions(ctx)
			if err != nil {
				return err
			}
			if asJSON {
				return printJSON(e, &v1.ListFunctionsResponse{Functions: fs})
			}
			tw := tabwriter.NewWriter(e.stdout, 0, 4, 2, ' ', 0)
			fmt.Fprintln(tw, "NAME\tRUNTIME\tIDEMPOTENT\tWORKERS\tSIGNATURE")
			for _, f := range fs {
				fmt.Fprintf(tw, "%s\t%s\t%v\t%d\t%s\n", f.Name, f.Runtime, f.Idempotent, len(f.WorkerIds), f.Signature)
			}
			return tw.Flush()
		}),
	}
	cf.register(cmd)
	cmd.Flags().BoolVar(&asJSON, "json", false, "print JSON")
	return cmd
}

func printJSON(e *env, m proto.Message) error {
	b, err := protojson.MarshalOptions{Multiline: true, Indent: "  ", EmitUnpopulated: true}.Marshal(m)
	if err != nil {
		return err
	}
	_, err = fmt.Fprintln(e.stdout, string(b))
	return err
}
