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
	"google.golang.org/grpc/status"

	"github.com/hivemind/taskworker/internal/metrics"
)

// Every family passes Prometheus's naming rules (what promtool check
// metrics applies).
func TestNamesPassTheLinter(t *testing.T) {
	m := metrics.New()
	m.ObserveCall("add", nil, time.Millisecond)
	m.SandboxKills.WithLabelValues("wasm", "deadline").Inc()
	problems, err := testutil.GatherAndLint(m.Registry)
	if err != nil {
		t.Fatal(err)
	}
	for _, p := range problems {
		t.Errorf("%s: %s", p.Metric, p.Text)
	}
}

// A worker's registry holds its families only, and they pass the linter;
// OnScrape's functions run before each gather.
func TestWorkerFamilies(t *testing.T) {
	m := metrics.NewWorker()
	scraped := 0
	m.OnScrape(func() { scraped++; m.StoredBytes.Set(42) })
	m.ObserveCall("add", nil, time.Millisecond)
	m.SandboxKills.WithLabelValues("starlark", "time").Inc()
	m.SandboxProcesses.WithLabelValues("starlark").Set(1)
	m.SandboxStarts.WithLabelValues("starlark").Inc()
	families, err := m.Gather()
	if err != nil {
		t.Fatal(err)
	}
	names := map[string]bool{}
	for _, f := range families {
		names[f.GetName()] = true
	}
	if scraped != 1 || testutil.ToFloat64(m.StoredBytes) != 42 {
		t.Errorf("OnScrape ran %d times before a gather, stored bytes %v", scraped, testutil.ToFloat64(m.StoredBytes))
	}
	for _, want := range []string{"taskworker_calls_total", "taskworker_sandbox_kills_total", "taskworker_stored_bytes", "taskworker_shards", "taskworker_calls_in_flight"} {
		if !names[want] {
			t.Errorf("a worker's metrics lack %s", want)
		}
	}
	for _, pool := range []string{"taskworker_workers", "taskworker_repair_backlog_files", "taskworker_repaired_shards_total"} {
		if names[pool] {
			t.Errorf("a worker's metrics have the pool's %s", pool)
		}
	}
	problems, err := testutil.GatherAndLint(m.Registry)
	if err != nil {
		t.Fatal(err)
	}
	for _, p := range problems {
		t.Errorf("%s: %s", p.Metric, p.Text)
	}
}

func TestFunctionLabel(t *testing.T) {
	for _, tc := range []struct {
		name string
		code codes.Code
		want string
	}{
		{"add", codes.OK, "add"},
		{"bob/report", codes.OK, "report"},          // never the owner
		{"bob/report", codes.Unknown, "report"},     // the function's own failure
		{"anything typed", codes.NotFound, "-"},     // refused before a function
		{"bob/report", codes.PermissionDenied, "-"}, // nor what was refused
	} {
		if got := metrics.FunctionLabel(tc.name, tc.code); got != tc.want {
			t.Errorf("FunctionLabel(%q, %s) = %q, want %q", tc.name, tc.code, got, tc.want)
		}
	}
}

// A call is counted under its function's label and its code, whether it
// succeeded (counted through the cached series) or not.
func TestObserveCall(t *testing.T) {
	m := metrics.New()
	for _, err := range []error{nil, nil, status.Error(codes.Unknown, "boom"), status.Error(codes.NotFound, "no such")} {
		m.ObserveCall("bob/report", err, time.Millisecond)
	}
	m.ObserveCall("report", nil, time.Millisecond)
	for _, tc := range []struct {
		function, code string
		want           float64
	}{
		{"report", "OK", 3},
		{"report", "Unknown", 1},
		{"-", "NotFound", 1},
	} {
		if got := testutil.ToFloat64(m.Calls.WithLabelValues(tc.function, tc.code)); got != tc.want {
			t.Errorf("calls of %s with %s: %v, want %v", tc.function, tc.code, got, tc.want)
		}
	}
	if n := testutil.CollectAndCount(m.CallSeconds); n != 2 {
		t.Errorf("%d series of call seconds, want 2 (report and -)", n)
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
