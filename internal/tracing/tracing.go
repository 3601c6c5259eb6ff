package tracing

import (
	"context"
	"encoding/hex"
	"fmt"
	"log/slog"
	"os"
	"slices"
	"strings"
	"time"

	"go.opentelemetry.io/contrib/instrumentation/google.golang.org/grpc/otelgrpc"
	"go.opentelemetry.io/otel"
	"go.opentelemetry.io/otel/exporters/otlp/otlptrace/otlptracegrpc"
	"go.opentelemetry.io/otel/propagation"
	"go.opentelemetry.io/otel/sdk/resource"
	sdktrace "go.opentelemetry.io/otel/sdk/trace"
	semconv "go.opentelemetry.io/otel/semconv/v1.26.0"
	"go.opentelemetry.io/otel/trace"
	"google.golang.org/grpc"
	"google.golang.org/grpc/stats"
)

// EnvEndpoint is the standard variable that turns tracing on when no
// endpoint is given.
const EnvEndpoint = "OTEL_EXPORTER_OTLP_ENDPOINT"

// Tracing is a process's tracing: nil or off, it adds nothing.
type Tracing struct {
	tp   *sdktrace.TracerProvider
	prop propagation.TextMapPropagator
}

// Setup starts tracing for service, exporting to endpoint (host:port or a
// URL; "" reads OTEL_EXPORTER_OTLP_ENDPOINT; both empty: off, and Setup
// returns nil). insecure sends spans without TLS, as to a collector on the
// same host.
func Setup(ctx context.Context, service, endpoint string, insecure bool) (*Tracing, error) {
	if endpoint == "" {
		endpoint = os.Getenv(EnvEndpoint)
	}
	if endpoint == "" {
		return nil, nil
	}
	opts := []otlptracegrpc.Option{}
	if strings.Contains(endpoint, "://") {
		opts = append(opts, otlptracegrpc.WithEndpointURL(endpoint))
	} else {
		opts = append(opts, otlptracegrpc.WithEndpoint(endpoint))
	}
	if insecure {
		opts = append(opts, otlptracegrpc.WithInsecure())
	}
	exp, err := otlptracegrpc.New(ctx, opts...)
	if err != nil {
		return nil, fmt.Errorf("tracing: the OTLP exporter for %s: %w", endpoint, err)
	}
	res, err := resource.Merge(resource.Default(), resource.NewSchemaless(semconv.ServiceName(service)))
	if err != nil {
		return nil, fmt.Errorf("tracing: %w", err)
	}
	tp := sdktrace.NewTracerProvider(sdktrace.WithBatcher(exp, sdktrace.WithBatchTimeout(time.Second)), sdktrace.WithResource(res))
	t := &Tracing{tp: tp, prop: propagation.NewCompositeTextMapPropagator(propagation.TraceContext{}, propagation.Baggage{})}
	otel.SetTracerProvider(tp)
	otel.SetTextMapPropagator(t.prop)
	return t, nil
}

// ServerOptions trace every RPC a server serves, continuing the caller's
// trace, but for the methods named in untraced (full method names): a
// long-lived stream that carries many calls traces each call itself, not
// the stream.
func (t *Tracing) ServerOptions(untraced ...string) []grpc.ServerOption {
	if t == nil {
		return nil
	}
	opts := []otelgrpc.Option{otelgrpc.WithTracerProvider(t.tp), otelgrpc.WithPropagators(t.prop)}
	if len(untraced) > 0 {
		opts = append(opts, otelgrpc.WithFilter(func(info *stats.RPCTagInfo) bool {
			return !slices.Contains(untraced, info.FullMethodName)
		}))
	}
	return []grpc.ServerOption{grpc.StatsHandler(otelgrpc.NewServerHandler(opts...))}
}

// DialOptions trace every RPC a client makes, passing the trace on.
func (t *Tracing) DialOptions() []grpc.DialOption {
	if t == nil {
		return nil
	}
	return []grpc.DialOption{grpc.WithStatsHandler(otelgrpc.NewClientHandler(
		otelgrpc.WithTracerProvider(t.tp), otelgrpc.WithPropagators(t.prop)))}
}

// Start starts a span of the process's own work (e.g. a sandboxed call)
// under ctx's span; off, it returns ctx and a span that does nothing.
func (t *Tracing) Start(ctx context.Context, name string, opts ...trace.SpanStartOption) (context.Context, trace.Span) {
	if t == nil {
		return ctx, trace.SpanFromContext(ctx)
	}
	return t.tp.Tracer("github.com/hivemind/taskworker").Start(ctx, name, opts...)
}

// Traceparent returns the W3C traceparent value of ctx's span ("" when ctx
// carries none): how a call's trace rides in a message of a stream that
// carries many calls (the pool's CallFrame).
func Traceparent(ctx context.Context) string {
	sc := trace.SpanContextFromContext(ctx)
	if !sc.IsValid() {
		return ""
	}
	tid, sid := sc.TraceID(), sc.SpanID()
	b := make([]byte, 0, 55)
	b = append(b, "00-"...)
	b = hex.AppendEncode(b, tid[:])
	b = append(b, '-')
	b = hex.AppendEncode(b, sid[:])
	b = append(b, '-')
	b = hex.AppendEncode(b, []byte{byte(sc.TraceFlags())})
	return string(b)
}

// WithTraceparent returns ctx under the remote span a traceparent value
// names, so that spans started from it continue that trace. An empty or
// malformed value returns ctx as it is.
func WithTraceparent(ctx context.Context, traceparent string) context.Context {
	if traceparent == "" {
		return ctx
	}
	return propagation.TraceContext{}.Extract(ctx, traceparentCarrier(traceparent))
}

// traceparentCarrier is a carrier holding one traceparent value.
type traceparentCarrier string

func (c traceparentCarrier) Get(key string) string {
	if key == "traceparent" {
		return string(c)
	}
	return ""
}

func (traceparentCarrier) Set(string, string) {}

func (traceparentCarrier) Keys() []string { return []string{"traceparent"} }

// Shutdown sends the spans still batched and stops the exporter.
func (t *Tracing) Shutdown(ctx context.Context) error {
	if t == nil {
		return nil
	}
	return t.tp.Shutdown(ctx)
}

// LogHandler wraps h so that a record logged with a context that carries a
// span gets trace_id and span_id attributes.
func LogHandler(h slog.Handler) slog.Handler { return logHandler{h} }

type logHandler struct{ slog.Handler }

func (l logHandler) Handle(ctx context.Context, r slog.Record) error {
	if sc := trace.SpanContextFromContext(ctx); sc.IsValid() {
		r = r.Clone()
		r.AddAttrs(slog.String("trace_id", sc.TraceID().String()), slog.String("span_id", sc.SpanID().String()))
	}
	return l.Handler.Handle(ctx, r)
}

func (l logHandler) WithAttrs(attrs []slog.Attr) slog.Handler {
	return logHandler{l.Handler.WithAttrs(attrs)}
}

func (l logHandler) WithGroup(name string) slog.Handler { return logHandler{l.Handler.WithGroup(name)} }
