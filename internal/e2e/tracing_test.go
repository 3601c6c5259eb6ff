package e2e

import (
	"bytes"
	"context"
	"strings"
	"testing"
	"time"

	"github.com/hivemind/taskworker"
	"github.com/hivemind/taskworker/internal/tracing"
	"github.com/hivemind/taskworker/internal/tracing/tracingtest"
)

// A pool started with --otlp-endpoint continues a traced client's trace:
// the collector receives the pool's span of the call, in the client's
// trace, and the pool logs lines naming it.
func TestPoolContinuesAClientsTrace(t *testing.T) {
	col := tracingtest.Start(t)
	n := &network{t: t, dir: t.TempDir(), poolAddr: freeAddr(t), poolArgs: []string{"--otlp-endpoint", col.Addr}}
	n.startPool()
	n.workers = append(n.workers, n.startWorker("worker_001"))
	n.waitWorkers(1, 20*time.Second)

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
	if _, err := c.CallJSON(cctx, "add", []byte("[1, 2]")); err != nil {
		t.Fatal(err)
	}
	span.End()
	if err := tr.Shutdown(ctx); err != nil {
		t.Fatal(err)
	}
	traceID := span.SpanContext().TraceID()
	deadline := time.Now().Add(20 * time.Second)
	for {
		for _, s := range col.Spans() {
			if s.Service == "taskworker-pool" && bytes.Equal(s.TraceId, traceID[:]) && strings.Contains(s.Name, "CallFunction") {
				return
			}
		}
		if time.Now().After(deadline) {
			t.Fatalf("no span of the pool's CallFunction in trace %s; received %d spans", traceID, len(col.Spans()))
		}
		time.Sleep(200 * time.Millisecond)
	}
}
