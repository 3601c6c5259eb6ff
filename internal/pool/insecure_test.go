package pool_test

import (
	"bytes"
	"context"
	"log/slog"
	"strings"
	"sync"
	"testing"
	"time"

	"google.golang.org/grpc/codes"
	"google.golang.org/grpc/status"

	"github.com/hivemind/taskworker"
	"github.com/hivemind/taskworker/internal/examples"
	"github.com/hivemind/taskworker/internal/pool"
	"github.com/hivemind/taskworker/internal/worker"
)

type lockedBuffer struct {
	mu sync.Mutex
	b  bytes.Buffer
}

func (l *lockedBuffer) Write(p []byte) (int, error) {
	l.mu.Lock()
	defer l.mu.Unlock()
	return l.b.Write(p)
}

func (l *lockedBuffer) String() string {
	l.mu.Lock()
	defer l.mu.Unlock()
	return l.b.String()
}

// --insecure on both sides runs a network in plaintext, workers admitted
// by the join token, and each side says so in a warning when it starts.
func TestInsecureOnBothSides(t *testing.T) {
	ctx := ctxTimeout(t, time.Minute)
	var logs lockedBuffer
	log := slog.New(slog.NewTextHandler(&logs, nil))
	cfg := pool.DefaultConfig(t.TempDir())
	cfg.Listen = "127.0.0.1:0"
	cfg.EtcdTickMs, cfg.EtcdElectionMs = 10, 100
	cfg.Insecure = true
	cfg.Logger = log
	p, err := pool.New(cfg)
	if err != nil {
		t.Fatal(err)
	}
	if err := p.Start(ctx); err != nil {
		t.Fatal(err)
	}
	defer p.Kill()
	w, err := worker.New(worker.Config{ID: "plain", PoolAddr: p.Addr(), JoinToken: p.JoinToken(), Insecure: true, Logger: log})
	if err != nil {
		t.Fatal(err)
	}
	if err := examples.Register(w.Register); err != nil {
		t.Fatal(err)
	}
	if err := w.Start(ctx, "127.0.0.1:0"); err != nil {
		t.Fatal(err)
	}
	defer w.Kill()
	if err := w.WaitRegistered(ctx); err != nil {
		t.Fatal(err)
	}
	c, err := taskworker.Dial(p.Addr(), taskworker.WithToken(p.AdminToken()), taskworker.WithInsecure())
	if err != nil {
		t.Fatal(err)
	}
	defer c.Close()
	// The worker's registration reaches the pool's routes through its etcd
	// watch, a moment after the worker hears it registered.
	out, err := c.Call(ctx, "add", 1, 2)
	for status.Code(err) == codes.NotFound && ctx.Err() == nil {
		time.Sleep(20 * time.Millisecond)
		out, err = c.Call(ctx, "add", 1, 2)
	}
	if err != nil || string(out) != "3" {
		t.Fatalf("add over plaintext: %s, %v", out, err)
	}
	if n := strings.Count(logs.String(), "INSECURE"); n < 2 {
		t.Errorf("%d warnings of an insecure start in the logs; want the pool's and the worker's:\n%s", n, logs.String())
	}
	// A TLS client is refused by a plaintext pool (and says it cannot
	// reach it, not that it was served).
	tlsClient, err := taskworker.Dial(p.Addr(), taskworker.WithToken(p.AdminToken()))
	if err != nil {
		t.Fatal(err)
	}
	defer tlsClient.Close()
	cctx, cancel := context.WithTimeout(ctx, 5*time.Second)
	defer cancel()
	if _, err := tlsClient.Workers(cctx); err == nil {
		t.Error("a TLS client was served by a plaintext pool")
	}
}
