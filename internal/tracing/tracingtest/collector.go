// Package tracingtest is a real OTLP/gRPC trace receiver for tests: it
// keeps the spans processes export to it.
package tracingtest

import (
	"context"
	"net"
	"sync"
	"testing"

	collectorpb "go.opentelemetry.io/proto/otlp/collector/trace/v1"
	tracepb "go.opentelemetry.io/proto/otlp/trace/v1"
	"google.golang.org/grpc"
)

// Span is one received span and the service that sent it.
type Span struct {
	Service string
	*tracepb.Span
}

// Collector receives spans over OTLP/gRPC (plaintext).
type Collector struct {
	collectorpb.UnimplementedTraceServiceServer
	Addr string

	mu    sync.Mutex
	spans []Span
}

// Start serves a collector on a free loopback port until the test ends.
func Start(t testing.TB) *Collector {
	ln, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	c := &Collector{Addr: ln.Addr().String()}
	s := grpc.NewServer()
	collectorpb.RegisterTraceServiceServer(s, c)
	go s.Serve(ln)
	t.Cleanup(s.Stop)
	return c
}

// Export implements the OTLP trace service.
func (c *Collector) Export(_ context.Context, req *collectorpb.ExportTraceServiceRequest) (*collectorpb.ExportTraceServiceResponse, error) {
	c.mu.Lock()
	defer c.mu.Unlock()
	for _, rs := range req.ResourceSpans {
		service := ""
		for _, kv := range rs.GetResource().GetAttributes() {
			if kv.Key == "service.name" {
				service = kv.GetValue().GetStringValue()
			}
		}
		for _, ss := range rs.ScopeSpans {
			for _, sp := range ss.Spans {
				c.spans = append(c.spans, Span{Service: service, Span: sp})
			}
		}
	}
	return &collectorpb.ExportTraceServiceResponse{}, nil
}

// Spans returns the spans received so far.
func (c *Collector) Spans() []Span {
	c.mu.Lock()
	defer c.mu.Unlock()
	return append([]Span(nil), c.spans...)
}
