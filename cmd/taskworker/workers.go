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
	"github.com/hivemind/taskworker/internal/names"
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
			fmt.Fprintln(tw, "ID\tADDRESS\tSTATE\tINFLIGHT\tCALLS\tUP\tFUNCTIONS")
			now := time.Now()
			for _, w := range ws {
				names := make([]string, len(w.Functions))
				for i, f := range w.Functions {
					names[i] = f.Name
				}
				up := now.Sub(time.UnixMilli(w.RegisteredAtMs)).Round(time.Second)
				fmt.Fprintf(tw, "%s\t%s\t%s\t%d\t%d\t%s\t%s\n", w.WorkerId, w.Address, workerState(w), w.Inflight, w.CallsTotal, up, strings.Join(names, ","))
			}
			return tw.Flush()
		}),
	}
	cf.register(cmd)
	cmd.Flags().BoolVar(&asJSON, "json", false, "print JSON")
	cmd.AddCommand(revokeWorkerCommand(e))
	return cmd
}

// workerState is "serving", or "draining" for a drained worker.
func workerState(w *v1.WorkerInfo) string {
	if w.Draining {
		return "draining"
	}
	return "serving"
}

func revokeWorkerCommand(e *env) *cobra.Command {
	var cf clientFlags
	cmd := &cobra.Command{
		Use:   "revoke ID",
		Short: "Revoke a worker's certificate and drop it at once (admin)",
		Long: `Revoke the certificate of worker ID: every pool drops its connections and
registration at once, its key can never enrol again, and the id is free to be
enrolled by a new worker (with a join token). Use it for a worker that is
compromised or gone for good, or to free the id of a worker that lost its key.`,
		Example: `  taskworker workers revoke worker_003`,
		Args:    cobra.ExactArgs(1),
		RunE: cf.run(func(cmd *cobra.Command, args []string, c *taskworker.Client) error {
			if err := names.WorkerID(args[0]); err != nil {
				return err
			}
			ctx, cancel := context.WithTimeout(cmd.Context(), 10*time.Second)
			defer cancel()
			revoked, err := c.RevokeWorker(ctx, args[0])
			if err != nil {
				return err
			}
			if !revoked {
				return fmt.Errorf("worker %s is not enrolled: nothing to revoke", args[0])
			}
			fmt.Fprintf(e.stdout, "revoked worker %s\n", args[0])
			return nil
		}),
	}
	cf.register(cmd)
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
