package e2e

import (
	"bufio"
	"bytes"
	"context"
	"fmt"
	"io"
	"os"
	"os/exec"
	"path/filepath"
	"strings"
	"testing"
	"time"

	"github.com/hivemind/taskworker"
	"github.com/hivemind/taskworker/internal/proctest"
)

var binary string

func TestMain(m *testing.M) {
	dir, err := os.MkdirTemp("", "taskworker-e2e-")
	if err == nil {
		binary, err = proctest.Build(dir)
	}
	if err != nil {
		fmt.Fprintln(os.Stderr, err)
		os.Exit(1)
	}
	code := m.Run()
	os.RemoveAll(dir)
	os.Exit(code)
}

// start starts a taskworker process; its output goes to the test log on
// failure. Its stdout goes to stdout if not nil.
func start(t *testing.T, name string, stdout io.Writer, args ...string) *proctest.Process {
	t.Helper()
	p := &proctest.Process{Name: name, Exe: binary, Args: args, Stdout: stdout, Log: filepath.Join(t.TempDir(), "out.log")}
	if err := p.Start(); err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() {
		p.Kill()
		if t.Failed() {
			t.Logf("--- output of %s:\n%s", p.Name, p.Output())
		}
	})
	return p
}

// network is a pool process and worker processes.
type network struct {
	t        *testing.T
	dir      string
	poolAddr string
	pool     *proctest.Process
	workers  []*proctest.Process
	token    string
	// caFile, when set, is the network's CA certificate (the operator's,
	// from taskworker init); else the pool makes one in dir.
	caFile string
	// poolArgs are extra flags for the pool.
	poolArgs []string
}

func freeAddr(t *testing.T) string {
	addr, err := proctest.FreeAddr()
	if err != nil {
		t.Fatal(err)
	}
	return addr
}

func startNetwork(t *testing.T, workers int) *network {
	n := &network{t: t, dir: t.TempDir(), poolAddr: freeAddr(t)}
	n.startPool()
	for i := range workers {
		n.workers = append(n.workers, n.startWorker(fmt.Sprintf("worker_%03d", i+1)))
	}
	n.waitWorkers(workers, 20*time.Second)
	return n
}

func (n *network) startWorker(id string, flags ...string) *proctest.Process {
	args := []string{"worker", "--id", id, "--pool", n.poolAddr, "--listen", "127.0.0.1:0",
		"--examples", "--join-token-file", filepath.Join(n.dir, "join.token"), "--ca", n.ca(), "--log-level", "debug",
		"--data-dir", filepath.Join(n.dir, "workers", id)}
	return start(n.t, id, nil, append(args, flags...)...)
}

func (n *network) startPool() {
	args := []string{"pool", "--listen", n.poolAddr, "--data-dir", n.dir, "--lease-ttl", "2s",
		"--repair-grace", "1s", "--log-level", "debug"}
	n.pool = start(n.t, "pool", nil, append(args, n.poolArgs...)...)
	ctx, cancel := context.WithTimeout(context.Background(), 20*time.Second)
	defer cancel()
	var err error
	if n.token, err = proctest.WaitPool(ctx, n.pool, n.poolAddr, filepath.Join(n.dir, "admin.token"), ""); err != nil {
		n.t.Fatalf("the pool did not come up: %v", err)
	}
}

// ca is the network's CA certificate, which the pool makes in its data
// directory.
func (n *network) ca() string {
	if n.caFile != "" {
		return n.caFile
	}
	return filepath.Join(n.dir, "ca.crt")
}

func (n *network) client() *taskworker.Client {
	c, err := taskworker.Dial(n.poolAddr, taskworker.WithToken(n.token), taskworker.WithCAFile(n.ca()))
	if err != nil {
		n.t.Fatal(err)
	}
	n.t.Cleanup(func() { c.Close() })
	return c
}

// cli runs a client command against the network and returns its stdout.
func (n *network) cli(args ...string) (string, error) {
	cmd := exec.Command(binary, args...)
	cmd.Env = append(os.Environ(), "TASKWORKER_POOL="+n.poolAddr, "TASKWORKER_TOKEN="+n.token, "TASKWORKER_CA="+n.ca())
	var stderr bytes.Buffer
	cmd.Stderr = &stderr
	out, err := cmd.Output()
	if err != nil {
		return string(out), fmt.Errorf("%v: %s", err, stderr.String())
	}
	return string(out), nil
}

// waitWorkers waits until `taskworker workers` lists n workers.
func (n *network) waitWorkers(want int, within time.Duration) time.Duration {
	n.t.Helper()
	start := time.Now()
	for {
		out, err := n.cli("workers")
		got := -1
		if err == nil {
			got = len(nonEmptyLines(out)) - 1 // minus the header
		}
		if got == want {
			return time.Since(start)
		}
		if time.Since(start) > within {
			n.t.Fatalf("after %s `taskworker workers` lists %d workers, want %d:\n%s%v", within, got, want, out, err)
		}
		time.Sleep(100 * time.Millisecond)
	}
}

func nonEmptyLines(s string) []string {
	var out []string
	sc := bufio.NewScanner(strings.NewReader(s))
	for sc.Scan() {
		if strings.TrimSpace(sc.Text()) != "" {
			out = append(out, sc.Text())
		}
	}
	return out
}
