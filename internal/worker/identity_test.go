package worker_test

import (
	"bytes"
	"context"
	"io/fs"
	"os"
	"path/filepath"
	"syscall"
	"testing"
	"time"

	"github.com/hivemind/taskworker/internal/cluster"
	"github.com/hivemind/taskworker/internal/examples"
	"github.com/hivemind/taskworker/internal/worker"
)

// A worker keeps its key and certificate owner-only in its data directory
// whatever the umask, renews the certificate over mTLS before it expires
// (keeping its key), and after a restart needs no join token.
func TestWorkerIdentityRenewedAndKept(t *testing.T) {
	old := syscall.Umask(0)
	defer syscall.Umask(old)
	c := cluster.New(t, cluster.Options{Workers: 1, WorkerCertTTL: 10 * time.Second})
	ctx, cancel := context.WithTimeout(context.Background(), 2*time.Minute)
	defer cancel()
	dir := filepath.Join(c.Dir(), "workers", "worker_001", "identity")
	for path, want := range map[string]fs.FileMode{dir: 0o700, filepath.Join(dir, "worker.key"): 0o600, filepath.Join(dir, "worker.crt"): 0o600} {
		fi, err := os.Stat(path)
		if err != nil || fi.Mode().Perm() != want {
			t.Errorf("%s: %v; want mode %v", path, err, want)
		}
	}
	key, _ := os.ReadFile(filepath.Join(dir, "worker.key"))
	first, _ := os.ReadFile(filepath.Join(dir, "worker.crt"))
	deadline := time.Now().Add(time.Minute)
	for {
		now, _ := os.ReadFile(filepath.Join(dir, "worker.crt"))
		if len(now) > 0 && !bytes.Equal(now, first) {
			break
		}
		if time.Now().After(deadline) {
			t.Fatal("the certificate was not renewed within a minute (its lifetime is 10s)")
		}
		time.Sleep(100 * time.Millisecond)
	}
	if k, _ := os.ReadFile(filepath.Join(dir, "worker.key")); !bytes.Equal(k, key) {
		t.Error("renewal changed the worker's key")
	}
	// Past the first certificate's expiry, calls still reach the worker.
	time.Sleep(5 * time.Second)
	if _, err := c.Client(0).Call(ctx, "add", 1, 2); err != nil {
		t.Fatalf("a call after renewal: %v", err)
	}

	// Restarted with no join token, it comes back with its certificate.
	c.StopWorker(0)
	w, err := worker.New(worker.Config{ID: "worker_001", PoolAddr: c.PoolAddr(0), CA: c.CA.CertPEM(), DataDir: filepath.Dir(dir)})
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
		t.Fatalf("restarted without a join token: %v", err)
	}
	c.Workers[0] = w
}
