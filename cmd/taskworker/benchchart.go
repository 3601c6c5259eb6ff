package main

import (
	"fmt"
	"os"
	"time"

	"github.com/spf13/cobra"

	"github.com/hivemind/taskworker/internal/bench"
	"github.com/hivemind/taskworker/internal/benchchart"
)

func benchChartCommand(e *env) *cobra.Command {
	var from, out string
	cmd := &cobra.Command{
		Use:   "chart",
		Short: "Draw recorded bench runs as scaling curves (PNG)",
		Long: `Read the runs that bench call --record and bench files --record appended to a
JSON-lines file and draw them as PNG charts into --out: calls/s and latency
against concurrency, file throughput against size. scripts/bench-curves.sh
runs the whole sweep on a fresh local network and draws docs/bench/.`,
		Args: cobra.NoArgs,
		RunE: func(cmd *cobra.Command, _ []string) error {
			f, err := os.Open(from)
			if err != nil {
				return fmt.Errorf("open the bench record (write one with bench call --record FILE): %w", err)
			}
			defer f.Close()
			points, err := benchchart.Read(f)
			if err != nil {
				return err
			}
			written, err := benchchart.Draw(points, out)
			for _, path := range written {
				fmt.Fprintln(e.stdout, path)
			}
			return err
		},
	}
	cmd.Flags().StringVar(&from, "from", "bench-record.jsonl", "the record to draw")
	cmd.Flags().StringVar(&out, "out", "docs/bench", "directory for the PNG files")
	return cmd
}

// recordCalls appends call runs to the record at path, if there is one.
func recordCalls(path string, runs ...bench.Result) error {
	if path == "" {
		return nil
	}
	points := make([]benchchart.Point, 0, len(runs))
	now := time.Now().UTC()
	for _, r := range runs {
		if r.Calls == 0 {
			continue
		}
		points = append(points, benchchart.Point{Bench: "call", Series: r.Target, X: float64(r.Concurrency),
			Rate: r.Rate(), P50: r.P50, P99: r.P99, When: now})
	}
	return benchchart.Append(path, points...)
}
