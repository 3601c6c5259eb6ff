package e2e

import (
	"context"
	"os"
	"os/exec"
	"path/filepath"
	"strings"
	"sync"
	"sync/atomic"
	"syscall"
	"testing"
	"time"

	"github.com/miekg/dns"
	"google.golang.org/grpc/status"
)

// 200 concurrent callers of an idempotent function while a worker is
// SIGKILLed: no call fails, and the worker leaves the list within its lease.
func TestWorkerKilledUnderLoad(t *testing.T) {
	n := startNetwork(t, 3)
	c := n.client()
	ctx, cancel := context.WithTimeout(context.Background(), 60*time.Second)
	defer cancel()
	var calls, failed atomic.Int64
	var firstErr atomic.Value
	stop := make(chan struct{})
	var wg sync.WaitGroup
	for range 200 {
		wg.Go(func() {
			for {
				select {
				case <-stop:
					return
				default:
				}
				out, err := c.Call(ctx, "sleep", 20)
				calls.Add(1)
				if err != nil || string(out) != "20" {
					failed.Add(1)
					firstErr.CompareAndSwap(nil, status.Convert(err).Message()+" / "+string(out))
				}
			}
		})
	}
	time.Sleep(time.Second)
	n.workers[1].Kill()
	killed := time.Now()
	time.Sleep(2 * time.Second)
	close(stop)
	wg.Wait()
	if failed.Load() != 0 {
		t.Fatalf("%d of %d calls failed; first: %v", failed.Load(), calls.Load(), firstErr.Load())
	}
	t.Logf("%d calls, none failed", calls.Load())
	n.waitWorkers(2, 10*time.Second)
	if gone := time.Since(killed); gone > 2*time.Second+3*time.Second {
		t.Errorf("the killed worker stayed listed %s; the lease is 2s", gone)
	}
}

// The pool SIGKILLed under load and restarted on the same data: the workers
// come back by themselves and calls resume.
func TestPoolKilledAndRestarted(t *testing.T) {
	n := startNetwork(t, 3)
	c := n.client()
	ctx, cancel := context.WithTimeout(context.Background(), 90*time.Second)
	defer cancel()
	var ok atomic.Int64
	stop := make(chan struct{})
	var wg sync.WaitGroup
	for range 16 {
		wg.Go(func() {
			for {
				select {
				case <-stop:
					return
				default:
				}
				cctx, ccancel := context.WithTimeout(ctx, 2*time.Second)
				if _, err := c.Call(cctx, "add", 1, 2); err == nil {
					ok.Add(1)
				} else {
					time.Sleep(10 * time.Millisecond)
				}
				ccancel()
			}
		})
	}
	defer func() {
		close(stop)
		wg.Wait()
	}()
	time.Sleep(500 * time.Millisecond)
	if ok.Load() == 0 {
		t.Fatal("no call succeeded before the pool was killed")
	}
	n.pool.Kill()
	time.Sleep(3 * time.Second) // past the workers' leases
	n.startPool()
	n.waitWorkers(3, 20*time.Second)
	before := ok.Load()
	deadline := time.Now().Add(20 * time.Second)
	for ok.Load() < before+200 {
		if time.Now().After(deadline) {
			t.Fatalf("calls did not resume after the restart: %d succeeded since", ok.Load()-before)
		}
		time.Sleep(50 * time.Millisecond)
	}
}

// `taskworker up` prints the env, writes DIR/env, serves `call add 1 2`
// through it, and stops everything on SIGINT.
func TestUp(t *testing.T) {
	dir := t.TempDir()
	addr := freeAddr(t)
	p, vars := startUp(t, "--dir", dir, "--workers", "2", "--listen", addr)
	if vars["TASKWORKER_POOL"] != addr || !strings.HasPrefix(vars["TASKWORKER_TOKEN"], "tw_") {
		t.Fatalf("up printed %v", vars)
	}
	env, err := os.ReadFile(filepath.Join(dir, "env"))
	if err != nil || !strings.Contains(string(env), vars["TASKWORKER_TOKEN"]) {
		t.Fatalf("env file: %q, %v", env, err)
	}
	for _, f := range []string{"admin.token", "join.token"} {
		fi, err := os.Stat(filepath.Join(dir, "pool", f))
		if err != nil || fi.Mode().Perm() != 0o600 {
			t.Errorf("%s: %v, mode %v; want 0600", f, err, fi.Mode().Perm())
		}
	}
	call := exec.Command(binary, "call", "add", "1", "2")
	call.Env = append(os.Environ(), "TASKWORKER_HOME="+dir, "TASKWORKER_POOL=", "TASKWORKER_TOKEN=", "TASKWORKER_CA=")
	out, err := call.CombinedOutput()
	if err != nil || strings.TrimSpace(string(out)) != "3" {
		t.Fatalf("call add 1 2 through the env file: %q, %v", out, err)
	}
	if vars["TASKWORKER_CA"] != filepath.Join(dir, "ca.crt") || vars["TASKWORKER_JOIN_TOKEN_FILE"] != filepath.Join(dir, "pool", "join.token") {
		t.Errorf("up printed %v; want the CA and the join token file", vars)
	}
	// Its DNS listener answers for the network's zone, as dig would ask it.
	q := new(dns.Msg)
	q.SetQuestion("add.fn.taskworker.internal.", dns.TypeA)
	in, _, err := (&dns.Client{Timeout: 5 * time.Second}).Exchange(q, vars["TASKWORKER_DNS"])
	if err != nil || len(in.Answer) != 1 || in.Answer[0].(*dns.A).A.String() != "127.0.0.1" {
		t.Errorf("DNS at TASKWORKER_DNS=%q for add.fn.taskworker.internal: %v, %v", vars["TASKWORKER_DNS"], in, err)
	}
	// A worker started by hand beside it needs only its id: the pool, the
	// CA and the join token come from the env file.
	t.Setenv("TASKWORKER_HOME", dir)
	for _, v := range []string{"TASKWORKER_POOL", "TASKWORKER_TOKEN", "TASKWORKER_CA", "TASKWORKER_JOIN_TOKEN_FILE", "TASKWORKER_JOIN_TOKEN"} {
		t.Setenv(v, "")
	}
	extra := start(t, "extra", nil, "worker", "--id", "extra", "--examples", "--listen", "127.0.0.1:0")
	deadline := time.Now().Add(30 * time.Second)
	for {
		out, err := exec.Command(binary, "workers").CombinedOutput()
		if err == nil && strings.Contains(string(out), "extra ") {
			break
		}
		if time.Now().After(deadline) {
			t.Fatalf("the hand-started worker did not join: %s, %v\n%s", out, err, extra.Output())
		}
		time.Sleep(100 * time.Millisecond)
	}
	extra.Kill()
	_ = p.Signal(syscall.SIGINT)
	select {
	case <-p.Done():
	case <-time.After(30 * time.Second):
		t.Fatal("up did not stop on SIGINT")
	}
	if code := p.ExitCode(); code != 0 {
		t.Errorf("up exited %d", code)
	}
	if _, err := os.Stat(filepath.Join(dir, "env")); !os.IsNotExist(err) {
		t.Errorf("env file left behind after stop: %v", err)
	}
	if out, _ := exec.Command("pgrep", "-f", dir).Output(); len(out) > 0 {
		t.Errorf("processes left running: %s", out)
	}
}
