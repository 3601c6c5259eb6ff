// Package tracing is OpenTelemetry tracing for a TaskWorker process: off by
// default, exported over OTLP/gRPC when an endpoint is given (--otlp-endpoint,
// or the standard OTEL_EXPORTER_OTLP_ENDPOINT). It gives gRPC server and
// client options that carry a trace from a client to the pool (W3C trace
// context in gRPC metadata), Traceparent and WithTraceparent that carry it
// on to the worker in the call stream's frames (one stream carries many
// calls, so no metadata is per call), and a slog handler that adds the
// trace and span ids to every log line written with a call's context.
//
// # Caveats
//
//   - Off, it costs nothing: no stats handler is installed and the global
//     tracer provider stays the no-op one.
//   - The exporter batches spans; a process killed by SIGKILL loses the last
//     batch.
//   - The trace context is propagated from whoever calls: a client can choose
//     its trace id. Ids are for correlation, not for trust.
package tracing
