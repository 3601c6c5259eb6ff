// Command recorder is a worker built on the public library for the tasks
// test: its function record sleeps a random 0-200 ms, then tells a test
// server which task and attempt it ran, and on which worker.
//
//	recorder ID POOL JOIN_TOKEN_FILE CA DATA_DIR
package main

import (
	"bytes"
	"context"
	"encoding/json"
	"fmt"
	"math/rand/v2"
	"net/http"
	"os"
	"os/signal"
	"strings"
	"syscall"
	"time"

	"github.com/hivemind/taskworker"
)

func main() {
	if len(os.Args) != 6 {
		fmt.Fprintln(os.Stderr, "usage: recorder ID POOL JOIN_TOKEN_FILE CA DATA_DIR")
		os.Exit(2)
	}
	id, pool, tokenFile, ca, dir := os.Args[1], os.Args[2], os.Args[3], os.Args[4], os.Args[5]
	tok, err := os.ReadFile(tokenFile)
	if err != nil {
		fmt.Fprintln(os.Stderr, err)
		os.Exit(1)
	}
	w, err := taskworker.New(id, taskworker.WithPool(pool, strings.TrimSpace(string(tok))), taskworker.WithPoolCAFile(ca), taskworker.WithDataDir(dir))
	if err != nil {
		fmt.Fprintln(os.Stderr, err)
		os.Exit(1)
	}
	err = w.Function("record", func(ctx context.Context, url string) (int, error) {
		t, ok := taskworker.TaskFrom(ctx)
		if !ok {
			return 0, taskworker.Errorf(3, "record runs as a task only")
		}
		select {
		case <-time.After(time.Duration(rand.IntN(200)) * time.Millisecond):
		case <-ctx.Done():
			return 0, ctx.Err()
		}
		body, _ := json.Marshal(map[string]any{"task": t.ID, "attempt": t.Attempt, "worker": id})
		req, err := http.NewRequestWithContext(ctx, http.MethodPost, url, bytes.NewReader(body))
		if err != nil {
			return 0, err
		}
		resp, err := http.DefaultClient.Do(req)
		if err != nil {
			return 0, err
		}
		resp.Body.Close()
		return t.Attempt, nil
	})
	if err != nil {
		fmt.Fprintln(os.Stderr, err)
		os.Exit(1)
	}
	ctx, stop := signal.NotifyContext(context.Background(), syscall.SIGTERM, syscall.SIGINT)
	defer stop()
	if err := w.Start(ctx, "127.0.0.1:0"); err != nil {
		fmt.Fprintln(os.Stderr, err)
		os.Exit(1)
	}
	<-ctx.Done()
	sctx, cancel := context.WithTimeout(context.Background(), 10*time.Second)
	defer cancel()
	_ = w.Stop(sctx)
}
