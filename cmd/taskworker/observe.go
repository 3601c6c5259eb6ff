package main

import (
	"cmp"
	"context"
	"fmt"
	"log/slog"
	"os"

	"github.com/hivemind/taskworker/internal/metrics"
	"github.com/hivemind/taskworker/internal/tracing"
)

// observed is what --otlp-endpoint and --metrics-listen give a pool or a
// worker process.
type observed struct {
	Tracing *tracing.Tracing // nil: tracing off
	Metrics *metrics.Metrics // nil: no metrics
	Logger  *slog.Logger     // the logger, with the trace id in a call's lines when tracing
}

// observe sets up a process's tracing (spans over OTLP to otlp, or to the
// standard environment variable's endpoint) and its metrics (newMetrics'
// families served on metricsListen until ctx ends; "" for none). The caller
// defers done, which flushes the spans.
func observe(ctx context.Context, service, otlp, metricsListen string, newMetrics func() *metrics.Metrics, log *slog.Logger) (o observed, done func(), err error) {
	o.Logger, done = log, func() {}
	tr, err := tracing.Setup(ctx, service, otlp, otlpInsecure(otlp))
	if err != nil {
		return o, done, err
	}
	if tr != nil {
		done = func() { tr.Shutdown(context.Background()) }
		o.Tracing = tr
		o.Logger = slog.New(tracing.LogHandler(log.Handler()))
		o.Logger.Info("tracing: spans go over OTLP", "endpoint", cmp.Or(otlp, os.Getenv(tracing.EnvEndpoint)))
	}
	if metricsListen != "" {
		o.Metrics = newMetrics()
		addr, err := o.Metrics.Serve(ctx, metricsListen)
		if err != nil {
			return o, done, fmt.Errorf("--metrics-listen: %w", err)
		}
		o.Logger.Info("metrics", "url", "http://"+addr.String()+"/metrics")
	}
	return o, done, nil
}
