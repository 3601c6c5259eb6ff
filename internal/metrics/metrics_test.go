package metrics_test

import (
	"context"
	"io"
	"net"
	"net/http"
	"strings"
	"testing"
	"time"

	"github.com/prometheus/client_golang/prometheus/testutil"
	"google.golang.org/grpc"
	"google.golang.org/grpc/codes"
	"google.golang.org/grpc/credentials/insecure"
	"google.golang.org/grpc/health"
	healthpb "google.golang.org/grpc/health/grpc_health_v1"

	"github.com/hivemind/taskworker/internal/metrics"
)

// Every family passes Prometheus's naming rules (what promtool check
// metrics applies).
func TestNamesPassTheLinter(t *testing.T) {
	m := metrics.New()
	m.ObserveCall("add", "OK", time.Millisecond)
	m.SandboxKills.WithLabelValues("wasm", "deadline").Inc()
	problems, err := testutil.GatherAndLint(m.Registry)
	if err != nil {
		t.Fatal(err)
	}
	for _, p := range problems {
		t.Errorf("%s: %s", p.Metric, p.Text)
	}
}

// The interceptors count the RPCs of a real gRPC server, and /metrics
// serves them over HTTP.
func TestRPCsAreCountedAndScraped(t *testing.T) {
	m := metrics.New()
	g := grpc.NewServer(grpc.ChainUnaryInterceptor(m.UnaryInterceptor), grpc.ChainStreamInterceptor(m.StreamInterceptor))
	hs := health.NewServer()
	healthpb.RegisterHealthServer(g, hs)
	lis, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	go g.Serve(lis)
	t.Cleanup(g.Stop)
	conn, err := grpc.NewClient(lis.Addr().String(), grpc.WithTransportCredentials(insecure.NewCredentials()))
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { conn.Close() })
	hc := healthpb.NewHealthClient(conn)
	ctx := context.Background()
	for range 3 {
		if _, err := hc.Check(ctx, &healthpb.HealthCheckRequest{}); err != nil {
			t.Fatal(err)
		}
	}
	_, _ = hc.Check(ctx, &healthpb.HealthCheckRequest{Service: "nosuch"})

	check := healthpb.Health_Check_FullMethodName
	if got := testutil.ToFloat64(m.RPCs.WithLabelValues(check, codes.OK.String())); got != 3 {
		t.Errorf("OK checks counted: %v, want 3", got)
	}
	if got := testutil.ToFloat64(m.RPCs.WithLabelValues(check, codes.NotFound.String())); got != 1 {
		t.Errorf("NotFound checks counted: %v, want 1", got)
	}

	sctx, cancel := context.WithCancel(ctx)
	defer cancel()
	addr, err := m.Serve(sctx, "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	resp, err := http.Get("http://" + addr.String() + "/metrics")
	if err != nil {
		t.Fatal(err)
	}
	body, _ := io.ReadAll(resp.Body)
	resp.Body.Close()
	for _, want := range []string{`taskworker_grpc_requests_total{code="OK",method="/grpc.health.v1.Health/Check"} 3`, "go_goroutines", "process_cpu_seconds_total"} {
		if !strings.Contains(string(body), want) {
			t.Errorf("/metrics lacks %q", want)
		}
	}
}
