package e2e

import (
	"bytes"
	"context"
	"os"
	"path/filepath"
	"strconv"
	"strings"
	"testing"
	"time"

	commonpb "go.opentelemetry.io/proto/otlp/common/v1"

	"github.com/hivemind/taskworker"
	"github.com/hivemind/taskworker/internal/tracing"
	"github.com/hivemind/taskworker/internal/tracing/tracingtest"
)

// A pool and a worker started with --otlp-endpoint continue a traced
// client's trace: the collector receives, in the client's trace, the
// pool's span of the call under the client's, the worker's span of the
// call under the pool's (carried on the call stream), and the span of the
// sandboxed run under the worker's; the pool and the worker log lines
// naming the trace.
func TestPoolContinuesAClientsTrace(t *testing.T) {
	col := tracingtest.Start(t)
	n := &network{t: t, dir: t.TempDir(), poolAddr: freeAddr(t), poolArgs: []string{"--otlp-endpoint", col.Addr}}
	n.startPool()
	w := n.startWorker("worker_001", "--otlp-endpoint", col.Addr)
	n.workers = append(n.workers, w)
	n.waitWorkers(1, 20*time.Second)
	script := filepath.Join(t.TempDir(), "double.star")
	if err := os.WriteFile(script, []byte("def double(x):\n    return 2 * x\n"), 0o644); err != nil {
		t.Fatal(err)
	}
	if out, err := n.cli("deploy", "double", script); err != nil {
		t.Fatalf("deploy: %v: %s", err, out)
	}

	ctx := context.Background()
	tr, err := tracing.Setup(ctx, "e2e-client", col.Addr, true)
	if err != nil {
		t.Fatal(err)
	}
	c, err := taskworker.Dial(n.poolAddr, taskworker.WithToken(n.token), taskworker.WithCAFile(n.ca()),
		taskworker.WithDialOptions(tr.DialOptions()...))
	if err != nil {
		t.Fatal(err)
	}
	defer c.Close()
	cctx, span := tr.Start(ctx, "e2e")
	if out, err := c.CallJSON(cctx, "double", []byte("[21]")); err != nil || string(out) != "42" {
		t.Fatalf("double(21) = %s, %v", out, err)
	}
	span.End()
	if err := tr.Shutdown(ctx); err != nil {
		t.Fatal(err)
	}
	traceID := span.SpanContext().TraceID()

	// The spans of the call, each found by what it is, and their parents.
	type found struct{ id, parent []byte }
	var client, pool, worker, sandbox *found
	deadline := time.Now().Add(20 * time.Second)
	for {
		for _, s := range col.Spans() {
			if !bytes.Equal(s.TraceId, traceID[:]) {
				continue
			}
			f := &found{id: s.SpanId, parent: s.ParentSpanId}
			switch {
			case s.Service == "e2e-client" && strings.Contains(s.Name, "CallFunction"):
				client = f
			case s.Service == "taskworker-pool" && strings.Contains(s.Name, "CallFunction"):
				pool = f
			case s.Service == "taskworker-worker" && s.Name == "worker.call":
				worker = f
				if attr(s, "taskworker.function") != "double" || attr(s, "taskworker.outcome") != "OK" {
					t.Errorf("the worker's span of the call: %v", s.Attributes)
				}
			case s.Service == "taskworker-worker" && s.Name == "sandbox.run":
				sandbox = f
				if attr(s, "taskworker.runtime") != "starlark" || attr(s, "taskworker.function") != "double" ||
					attr(s, "taskworker.version") != "1" || attr(s, "taskworker.outcome") != "OK" || attr(s, "taskworker.module_sha256") == "" {
					t.Errorf("the sandbox's span: %v", s.Attributes)
				}
			}
		}
		if client != nil && pool != nil && worker != nil && sandbox != nil {
			break
		}
		if time.Now().After(deadline) {
			t.Fatalf("trace %s: client %v, pool %v, worker %v, sandbox %v; received %d spans",
				traceID, client != nil, pool != nil, worker != nil, sandbox != nil, len(col.Spans()))
		}
		time.Sleep(200 * time.Millisecond)
	}
	for _, link := range []struct {
		name          string
		child, parent *found
	}{{"pool under client", pool, client}, {"worker under pool", worker, pool}, {"sandbox under worker", sandbox, worker}} {
		if !bytes.Equal(link.child.parent, link.parent.id) {
			t.Errorf("%s: the parent is %x, not %x", link.name, link.child.parent, link.parent.id)
		}
	}
	if !strings.Contains(w.Output(), "trace_id="+traceID.String()) {
		t.Errorf("no line of the worker's log names the trace %s", traceID)
	}
}

// attr is a span's attribute as text.
func attr(s tracingtest.Span, key string) string {
	for _, kv := range s.Attributes {
		if kv.Key == key {
			if v, ok := kv.Value.GetValue().(*commonpb.AnyValue_IntValue); ok {
				return strconv.FormatInt(v.IntValue, 10)
			}
			return kv.Value.GetStringValue()
		}
	}
	return ""
}
