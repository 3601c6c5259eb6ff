// Command secretworker is a worker program built on the library, for the
// end-to-end tests: its native function read_secret reads a secret with
// taskworker.Secret during its call and returns the SHA-256 of the value
// (hex), never the value. It logs at debug level to standard error.
package main

import (
	"context"
	"crypto/sha256"
	"encoding/hex"
	"flag"
	"fmt"
	"log/slog"
	"os"
	"os/signal"
	"strings"
	"syscall"

	"github.com/hivemind/taskworker"
)

func main() {
	id := flag.String("id", "native_001", "the worker's id")
	pool := flag.String("pool", "", "the pool's address")
	joinFile := flag.String("join-token-file", "", "the network's join token")
	ca := flag.String("ca", "", "the network's CA certificate")
	dataDir := flag.String("data-dir", "", "the worker's data directory")
	flag.Parse()
	if err := run(*id, *pool, *joinFile, *ca, *dataDir); err != nil {
		fmt.Fprintln(os.Stderr, "secretworker:", err)
		os.Exit(1)
	}
}

func run(id, pool, joinFile, ca, dataDir string) error {
	join, err := os.ReadFile(joinFile)
	if err != nil {
		return err
	}
	logger := slog.New(slog.NewTextHandler(os.Stderr, &slog.HandlerOptions{Level: slog.LevelDebug}))
	w, err := taskworker.New(id, taskworker.WithPool(pool, strings.TrimSpace(string(join))), taskworker.WithPoolCAFile(ca),
		taskworker.WithDataDir(dataDir), taskworker.WithLogger(logger))
	if err != nil {
		return err
	}
	err = w.Function("read_secret", func(ctx context.Context, name string) (string, error) {
		v, err := taskworker.Secret(ctx, name)
		if err != nil {
			return "", err
		}
		sum := sha256.Sum256(v)
		return hex.EncodeToString(sum[:]), nil
	})
	if err != nil {
		return err
	}
	ctx, stop := signal.NotifyContext(context.Background(), syscall.SIGINT, syscall.SIGTERM)
	defer stop()
	if err := w.Start(ctx, "127.0.0.1:0"); err != nil {
		return err
	}
	<-ctx.Done()
	return w.Stop(context.Background())
}
