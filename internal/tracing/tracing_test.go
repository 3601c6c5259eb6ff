package tracing_test

import (
	"bytes"
	"context"
	"encoding/hex"
	"log/slog"
	"net"
	"strings"
	"testing"
	"time"

	"go.opentelemetry.io/otel/trace"
	"google.golang.org/grpc"
	"google.golang.org/grpc/credentials/insecure"
	"google.golang.org/grpc/health"
	healthpb "google.golang.org/grpc/health/grpc_health_v1"

	"github.com/hivemind/taskworker/internal/tracing"
	"github.com/hivemind/taskworker/internal/tracing/tracingtest"
)

func TestOffByDefault(t *testing.T) {
	t.Setenv(tracing.EnvEndpoint, "")
	tr, err := tracing.Setup(context.Background(), "pool", "", true)
	if err != nil || tr != nil {
		t.Fatalf("Setup with no endpoint = %v, %v; want off (nil)", tr, err)
	}
	if tr.ServerOptions() != nil || tr.DialOptions() != nil || tr.Shutdown(context.Background()) != nil {
		t.Fatal("tracing that is off adds options")
	}
}

// A call between two real gRPC endpoints, both traced, exported to a real
// OTLP receiver: the server's span continues the client's trace, and a log
// line written with the server's context names it.
func TestATraceCrossesARealCall(t *testing.T) {
	col := tracingtest.Start(t)
	ctx := context.Background()
	tr, err := tracing.Setup(ctx, "taskworker-test", col.Addr, true)
	if err != nil {
		t.Fatal(err)
	}
	var logs bytes.Buffer
	log := slog.New(tracing.LogHandler(slog.NewJSONHandler(&logs, nil)))

	ln, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	srv := grpc.NewServer(append(tr.ServerOptions(), grpc.ChainUnaryInterceptor(
		func(ctx context.Context, req any, info *grpc.UnaryServerInfo, h grpc.UnaryHandler) (any, error) {
			log.InfoContext(ctx, "serving", "method", info.FullMethod)
			return h(ctx, req)
		}), grpc.WaitForHandlers(true))...)
	healthpb.RegisterHealthServer(srv, health.NewServer())
	go srv.Serve(ln)
	defer srv.Stop()
	conn, err := grpc.NewClient(ln.Addr().String(), append(tr.DialOptions(), grpc.WithTransportCredentials(insecure.NewCredentials()))...)
	if err != nil {
		t.Fatal(err)
	}
	defer conn.Close()

	cctx, span := tr.Start(ctx, "caller")
	if _, err := healthpb.NewHealthClient(conn).Check(cctx, &healthpb.HealthCheckRequest{}); err != nil {
		t.Fatal(err)
	}
	span.End()
	traceID := span.SpanContext().TraceID()
	// The server ends its span after it has answered: stop it, waiting
	// for its handlers, before the exporter flushes and shuts down.
	srv.GracefulStop()
	if err := tr.Shutdown(ctx); err != nil {
		t.Fatal(err)
	}
	deadline := time.Now().Add(10 * time.Second)
	var server, client bool
	for time.Now().Before(deadline) && !(server && client) {
		for _, s := range col.Spans() {
			if !bytes.Equal(s.TraceId, traceID[:]) || s.Service != "taskworker-test" {
				continue
			}
			switch {
			case strings.Contains(s.Name, "Check") && s.Kind.String() == "SPAN_KIND_SERVER":
				server = true
			case strings.Contains(s.Name, "Check") && s.Kind.String() == "SPAN_KIND_CLIENT":
				client = true
			}
		}
		time.Sleep(50 * time.Millisecond)
	}
	if !server || !client {
		t.Fatalf("trace %s: server span %v, client span %v; received %d spans", traceID, server, client, len(col.Spans()))
	}
	if !strings.Contains(logs.String(), `"trace_id":"`+hex.EncodeToString(traceID[:])+`"`) {
		t.Fatalf("the server's log line does not name the trace %s: %s", traceID, logs.String())
	}
}

// A span's context survives the trip through a traceparent value, as a
// call's does on the pool's call stream; an empty or malformed value
// changes nothing.
func TestTraceparentRoundTrip(t *testing.T) {
	ctx := context.Background()
	if tracing.Traceparent(ctx) != "" {
		t.Fatal("a context with no span has a traceparent")
	}
	tid, _ := trace.TraceIDFromHex("4bf92f3577b34da6a3ce929d0e0e4736")
	sid, _ := trace.SpanIDFromHex("00f067aa0ba902b7")
	sc := trace.NewSpanContext(trace.SpanContextConfig{TraceID: tid, SpanID: sid, TraceFlags: trace.FlagsSampled})
	tp := tracing.Traceparent(trace.ContextWithSpanContext(ctx, sc))
	if tp != "00-4bf92f3577b34da6a3ce929d0e0e4736-00f067aa0ba902b7-01" {
		t.Fatalf("traceparent %q", tp)
	}
	got := trace.SpanContextFromContext(tracing.WithTraceparent(ctx, tp))
	if got.TraceID() != tid || got.SpanID() != sid || !got.IsSampled() || !got.IsRemote() {
		t.Fatalf("from %q: %+v", tp, got)
	}
	for _, bad := range []string{"", "00-zz-00f067aa0ba902b7-01", "garbage"} {
		if trace.SpanContextFromContext(tracing.WithTraceparent(ctx, bad)).IsValid() {
			t.Errorf("%q gave a span context", bad)
		}
	}
}
