package e2e

import (
	"context"
	"os"
	"path/filepath"
	"regexp"
	"strings"
	"testing"
	"time"

	"github.com/prometheus/client_golang/prometheus/testutil/promlint"
	"google.golang.org/grpc/codes"
	"google.golang.org/grpc/status"

	"github.com/hivemind/taskworker/internal/proctest"
)

// A worker started with --metrics-listen serves its own /metrics: its
// calls, the Starlark process a call started and the one killed past its
// time limit, and the shards a push left on it move their series; every
// family passes Prometheus's linter.
func TestWorkerMetricsMove(t *testing.T) {
	n := &network{t: t, dir: t.TempDir(), poolAddr: freeAddr(t)}
	n.startPool()
	w := n.startWorker("worker_001", "--metrics-listen", "127.0.0.1:0")
	n.workers = append(n.workers, w)
	n.waitWorkers(1, 20*time.Second)
	url := metricsURL(t, w)

	ctx, cancel := context.WithTimeout(context.Background(), 2*time.Minute)
	defer cancel()
	c := n.client()
	for range 3 {
		if _, err := c.CallJSON(ctx, "add", []byte("[1, 2]")); err != nil {
			t.Fatal(err)
		}
	}
	if _, err := c.CallJSON(ctx, "add", []byte(`["one", 2]`)); status.Code(err) != codes.InvalidArgument {
		t.Fatalf("add with a string: %v, want InvalidArgument", err)
	}

	script := filepath.Join(t.TempDir(), "spin.star")
	if err := os.WriteFile(script, []byte("def spin():\n    n = 0\n    while True:\n        n += 1\n    return n\n"), 0o644); err != nil {
		t.Fatal(err)
	}
	if out, err := n.cli("deploy", "spin", script, "--timeout", "300ms"); err != nil {
		t.Fatalf("deploy: %v: %s", err, out)
	}
	if _, err := c.CallJSON(ctx, "spin", []byte("[]")); status.Code(err) != codes.DeadlineExceeded {
		t.Fatalf("a call spinning past its time limit: %v, want DeadlineExceeded", err)
	}
	if _, err := c.Push(ctx, "metrics.bin", randomBytes(256<<10)); err != nil {
		t.Fatal(err)
	}

	for _, tc := range []struct {
		series  string
		atLeast float64
	}{
		{`taskworker_calls_total{code="OK",function="add"}`, 3},
		{`taskworker_calls_total{code="InvalidArgument",function="-"}`, 1},
		{`taskworker_calls_total{code="DeadlineExceeded",function="spin"}`, 1},
		{`taskworker_call_duration_seconds_count{function="add"}`, 3},
		{`taskworker_sandbox_starts_total{class="starlark"}`, 1},
		{`taskworker_sandbox_kills_total{class="starlark",reason="time"}`, 1},
		{`taskworker_grpc_requests_total{code="OK",method="/taskworker.v1.ShardService/PutShard"}`, 1},
	} {
		if v := scrape(t, url, tc.series); v < tc.atLeast {
			t.Errorf("%s = %v, want at least %v", tc.series, v, tc.atLeast)
		}
	}
	if v := scrape(t, url, `taskworker_sandbox_kills_total{class="starlark",reason="memory"}`); v != 0 {
		t.Errorf("memory kills = %v, want 0 (present, and none)", v)
	}
	// The shard store's size is read at most every few seconds.
	deadline := time.Now().Add(30 * time.Second)
	for {
		bytes, shards := scrape(t, url, "taskworker_stored_bytes"), scrape(t, url, "taskworker_shards")
		if bytes >= 256<<10 && shards >= 1 {
			break
		}
		if time.Now().After(deadline) {
			t.Fatalf("after a push of 256 KiB the worker reports %v bytes in %v shards", bytes, shards)
		}
		time.Sleep(time.Second)
	}

	body := scrapeAll(t, url)
	for _, pool := range []string{"taskworker_workers", "taskworker_files", "taskworker_repair_backlog_files"} {
		if strings.Contains(body, "\n"+pool+" ") || strings.Contains(body, "\n"+pool+"{") {
			t.Errorf("a worker exports the pool's %s", pool)
		}
	}
	problems, err := promlint.New(strings.NewReader(body)).Lint()
	if err != nil {
		t.Fatal(err)
	}
	for _, p := range problems {
		t.Errorf("%s: %s", p.Metric, p.Text)
	}
}

// metricsURL is the /metrics URL a process logged at start (--metrics-listen
// with port 0 picks a free one, free of the races of choosing one first).
func metricsURL(t *testing.T, p *proctest.Process) string {
	t.Helper()
	re := regexp.MustCompile(`msg=metrics url=(http://\S+/metrics)`)
	deadline := time.Now().Add(10 * time.Second)
	for {
		if m := re.FindStringSubmatch(p.Output()); m != nil {
			return m[1]
		}
		if time.Now().After(deadline) {
			t.Fatalf("the process logged no metrics URL:\n%s", p.Output())
		}
		time.Sleep(100 * time.Millisecond)
	}
}
