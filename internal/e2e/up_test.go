package e2e

import (
	"bufio"
	"bytes"
	"fmt"
	"io"
	"net"
	"os"
	"os/exec"
	"path/filepath"
	"runtime"
	"strconv"
	"strings"
	"testing"
	"time"

	"github.com/hivemind/taskworker/internal/localnet"
	"github.com/hivemind/taskworker/internal/proctest"
)

// startUp runs `taskworker up` with args and returns it once it has
// printed its env (TASKWORKER_POOL, TASKWORKER_TOKEN, TASKWORKER_CA,
// TASKWORKER_JOIN_TOKEN_FILE, and TASKWORKER_DNS unless --dns-listen "").
func startUp(t *testing.T, args ...string) (*proctest.Process, map[string]string) {
	t.Helper()
	stdout, w, err := os.Pipe()
	if err != nil {
		t.Fatal(err)
	}
	p := start(t, "up", w, append([]string{"up"}, args...)...)
	w.Close()
	vars := map[string]string{}
	sc := bufio.NewScanner(stdout)
	for sc.Scan() {
		k, v, ok := strings.Cut(sc.Text(), "=")
		if !ok {
			break
		}
		vars[k] = v
		if k == "TASKWORKER_JOIN_TOKEN_FILE" {
			break // the last line
		}
	}
	go io.Copy(io.Discard, stdout)
	if vars["TASKWORKER_POOL"] == "" {
		t.Fatalf("up printed no env; its output:\n%s", p.Output())
	}
	return p, vars
}

// runCLI runs a command of the binary in a directory of its own, with
// extra environment, and returns its combined output.
func runCLI(t *testing.T, env []string, args ...string) (string, error) {
	t.Helper()
	cmd := exec.Command(binary, args...)
	cmd.Env = append(os.Environ(), env...)
	cmd.Dir = t.TempDir()
	out, err := cmd.CombinedOutput()
	return strings.TrimSpace(string(out)), err
}

// After `up` dies by SIGKILL, its registrations outlive it in etcd (a
// restarted etcd renews their leases). A restarted `up` must say ready only
// once its own workers have registered again: the first call right after
// "ready" succeeds.
func TestUpRestartAfterKill(t *testing.T) {
	dir := t.TempDir()
	t.Setenv("TASKWORKER_HOME", dir)
	t.Setenv("TASKWORKER_POOL", "")
	t.Setenv("TASKWORKER_TOKEN", "")
	t.Setenv("TASKWORKER_CA", "")
	addr := freeAddr(t)
	first, _ := startUp(t, "--workers", "2", "--listen", addr)
	first.Kill()
	_, vars := startUp(t, "--workers", "2", "--listen", addr)
	if vars["TASKWORKER_POOL"] != addr {
		t.Fatalf("restarted up printed %v", vars)
	}
	for i := range 3 {
		if out, err := runCLI(t, nil, "call", "add", "1", "2"); err != nil || out != "3" {
			t.Fatalf("call %d right after ready: %q, %v", i+1, out, err)
		}
	}
}

// Two networks of `up` cannot share a directory; a busy --listen is refused
// before anything is written.
func TestUpRefusals(t *testing.T) {
	dir := t.TempDir()
	startUp(t, "--dir", dir, "--workers", "1", "--listen", "127.0.0.1:0")
	out, err := runCLI(t, nil, "up", "--dir", dir, "--workers", "1", "--listen", "127.0.0.1:0")
	if err == nil || !strings.Contains(out, "another local network is running in this directory") || !strings.Contains(out, "another --dir") {
		t.Fatalf("a second up in the same directory: %v, %q", err, out)
	}
	busy, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	defer busy.Close()
	other := t.TempDir()
	out, err = runCLI(t, nil, "up", "--dir", other, "--workers", "1", "--listen", busy.Addr().String())
	if err == nil || !strings.Contains(out, "pass --listen with a free port") {
		t.Fatalf("up on a busy --listen: %v, %q", err, out)
	}
	if entries, _ := os.ReadDir(other); len(entries) > 1 { // the lock file at most
		t.Errorf("up on a busy address wrote %v", entries)
	}
}

// The README's "Running a real network", beside a running `up` with the
// same TASKWORKER_HOME: the pool's and the worker's default directories are
// their own, the join token is found by its full path from anywhere, and
// both networks serve calls. (The ports are free ones, not the README's.)
func TestReadmeRealNetworkBesideUp(t *testing.T) {
	home := t.TempDir()
	t.Setenv("TASKWORKER_HOME", home)
	t.Setenv("TASKWORKER_POOL", "")
	t.Setenv("TASKWORKER_TOKEN", "")
	t.Setenv("TASKWORKER_CA", "")
	startUp(t, "--workers", "1", "--listen", freeAddr(t))

	addr := freeAddr(t)
	port := addr[strings.LastIndex(addr, ":")+1:]
	poolDir := filepath.Join(home, "pool-"+port)
	pool := start(t, "pool", nil, "pool", "--listen", addr)
	joinToken := filepath.Join(poolDir, "join.token")
	waitFile(t, joinToken, pool)
	ca := filepath.Join(poolDir, "ca.crt")
	start(t, "worker", nil, "worker", "--pool", addr, "--join-token-file", joinToken, "--ca", ca, "--id", "worker_001", "--examples",
		"--listen", "127.0.0.1:0")
	admin, err := os.ReadFile(filepath.Join(poolDir, "admin.token"))
	if err != nil {
		t.Fatal(err)
	}
	client := []string{"TASKWORKER_POOL=" + addr, "TASKWORKER_TOKEN=" + strings.TrimSpace(string(admin)), "TASKWORKER_CA=" + ca}
	deadline := time.Now().Add(30 * time.Second)
	for {
		out, err := runCLI(t, client, "call", "add", "1", "2")
		if err == nil && out == "3" {
			break
		}
		if time.Now().After(deadline) {
			t.Fatalf("call through the second network: %q, %v", out, err)
		}
		time.Sleep(100 * time.Millisecond)
	}
	if out, err := runCLI(t, nil, "call", "add", "2", "2"); err != nil || out != "4" {
		t.Fatalf("call through up's network: %q, %v", out, err)
	}
	for _, d := range []string{filepath.Join(home, "joined", "127.0.0.1_"+port, "worker_001"), filepath.Join(home, "workers", "worker_001")} {
		if _, err := os.Stat(d); err != nil {
			t.Errorf("%s: %v", d, err)
		}
	}
}

// waitFile waits for p to write a file.
func waitFile(t *testing.T, path string, p *proctest.Process) {
	t.Helper()
	deadline := time.Now().Add(30 * time.Second)
	for {
		if _, err := os.Stat(path); err == nil {
			return
		}
		select {
		case <-p.Done():
			t.Fatalf("%s exited before writing %s:\n%s", p.Name, path, p.Output())
		default:
		}
		if time.Now().After(deadline) {
			t.Fatalf("%s was not written within 30s", path)
		}
		time.Sleep(50 * time.Millisecond)
	}
}

// The workers of `up` share the machine's CPUs: each one's Go runtime is
// started with GOMAXPROCS set to its share (localnet.WorkerShare), so that
// three workers on two CPUs do not each keep two threads looking for work.
func TestUpSharesTheCPUsAmongItsWorkers(t *testing.T) {
	// This process's GOMAXPROCS is up's: the same machine and limits
	// (unless go test -cpu changed it, which this test does not support).
	want := fmt.Sprint(localnet.WorkerShare(runtime.GOMAXPROCS(0), 3))
	if v := os.Getenv("GOMAXPROCS"); v != "" {
		want = v // set for every process: up's workers inherit it
	}
	up, _ := startUp(t, "--dir", t.TempDir(), "--workers", "3", "--listen", "127.0.0.1:0", "--dns-listen", "", "--http-listen", "")
	workers := childrenOf(t, up.Pid())
	if len(workers) != 3 {
		t.Fatalf("up has %d child processes, want its 3 workers: %v", len(workers), workers)
	}
	for _, pid := range workers {
		environ, err := os.ReadFile(fmt.Sprintf("/proc/%d/environ", pid))
		if err != nil {
			t.Fatal(err)
		}
		got := "unset"
		for kv := range strings.SplitSeq(string(environ), "\x00") {
			if v, ok := strings.CutPrefix(kv, "GOMAXPROCS="); ok {
				got = v
			}
		}
		if got != want {
			t.Errorf("worker process %d runs with GOMAXPROCS %s, want %s", pid, got, want)
		}
	}
}

// childrenOf lists the processes whose parent is pid.
func childrenOf(t *testing.T, pid int) []int {
	t.Helper()
	entries, err := os.ReadDir("/proc")
	if err != nil {
		t.Fatal(err)
	}
	var children []int
	for _, e := range entries {
		child, err := strconv.Atoi(e.Name())
		if err != nil {
			continue
		}
		stat, err := os.ReadFile(filepath.Join("/proc", e.Name(), "stat"))
		if err != nil {
			continue // it ended
		}
		// "pid (comm) S ppid ...": the fields after the last parenthesis.
		fields := strings.Fields(string(stat[bytes.LastIndexByte(stat, ')')+1:]))
		if len(fields) > 1 && fields[1] == strconv.Itoa(pid) {
			children = append(children, child)
		}
	}
	return children
}
