package worker

import (
	"context"
	"log/slog"
	"strings"

	"go.opentelemetry.io/otel/attribute"
	otelcodes "go.opentelemetry.io/otel/codes"
	"go.opentelemetry.io/otel/trace"
	"google.golang.org/grpc/codes"
	"google.golang.org/grpc/status"

	v1 "github.com/hivemind/taskworker/api/taskworker/v1"
	"github.com/hivemind/taskworker/internal/metrics"
)

// callSpan starts the worker's span of a call, in the trace the call
// carries (the pool's call frame, or a traced unary call's metadata), or a
// new one. It returns a nil span when tracing is off: no span work at all.
func (s *Server) callSpan(ctx context.Context, req *v1.FunctionCallRequest) (context.Context, trace.Span) {
	if s.cfg.Tracing == nil {
		return ctx, nil
	}
	kind := trace.SpanKindInternal // under otelgrpc's server span of a unary call
	if trace.SpanContextFromContext(ctx).IsRemote() {
		kind = trace.SpanKindServer // the pool's span, from its call frame
	}
	return s.cfg.Tracing.Start(ctx, "worker.call", trace.WithSpanKind(kind), trace.WithAttributes(
		attribute.String("taskworker.function", metrics.FunctionLabel(req.FunctionName, codes.OK)),
		attribute.String("taskworker.worker", s.cfg.ID)))
}

// endSpan ends a span of a call or a run with its outcome: the gRPC code
// the caller sees, and the message of a failure.
func endSpan(span trace.Span, err error) {
	st := status.Convert(err)
	span.SetAttributes(attribute.String("taskworker.outcome", st.Code().String()))
	if err != nil {
		span.SetStatus(otelcodes.Error, st.Message())
	}
	span.End()
}

// logCall writes the call's line at debug level, with ctx: under tracing
// the line names the call's trace (tracing.LogHandler). Below debug it
// costs one Enabled check.
func (s *Server) logCall(ctx context.Context, req *v1.FunctionCallRequest, err error) {
	if !s.log.Enabled(ctx, slog.LevelDebug) {
		return
	}
	code := status.Code(err)
	s.log.DebugContext(ctx, "call", "function", metrics.FunctionLabel(req.FunctionName, code), "code", code.String())
}

// sandboxSpan starts the span of a deployed function's run in the sandbox,
// naming its runtime, function, version and module; nil when tracing is
// off.
func (s *Server) sandboxSpan(ctx context.Context, d *v1.Deployment) (context.Context, trace.Span) {
	if s.cfg.Tracing == nil {
		return ctx, nil
	}
	return s.cfg.Tracing.Start(ctx, "sandbox.run", trace.WithAttributes(
		attribute.String("taskworker.runtime", strings.ToLower(strings.TrimPrefix(d.Runtime.String(), "RUNTIME_"))),
		attribute.String("taskworker.function", d.Name),
		attribute.Int64("taskworker.version", d.Version),
		attribute.String("taskworker.module_sha256", d.ModuleSha256)))
}
