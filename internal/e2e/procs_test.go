package e2e

import (
	"bufio"
	"bytes"
	"context"
	"fmt"
	"io"
	"net"
	"os"
	"os/exec"
	"path/filepath"
	"strings"
	"sync"
	"syscall"
	"testing"
	"time"

	"github.com/hivemind/taskworker"
)

var binary string

func TestMain(m *testing.M) {
	dir, err := os.MkdirTemp("", "taskworker-e2e-")
	if err != nil {
		fmt.Fprintln(os.Stderr, err)
		os.Exit(1)
	}
	binary = filepath.Join(dir, "taskworker")
	build := exec.Command("go", "build", "-o", binary, "github.com/hivemind/taskworker/cmd/taskworker")
	build.Stdout, build.Stderr = os.Stderr, os.Stderr
	if err := build.Run(); err != nil {
		fmt.Fprintln(os.Stderr, "building taskworker:", err)
		os.Exit(1)
	}
	code := m.Run()
	os.RemoveAll(dir)
	os.Exit(code)
}

// proc is a taskworker process; its output goes to the test log on failure.
type proc struct {
	t    *testing.T
	name string
	cmd  *exec.Cmd
	out  *syncBuffer
	done chan struct{}
}

type syncBuffer struct {
	mu sync.Mutex
	b  bytes.Buffer
}

func (s *syncBuffer) Write(p []byte) (int, error) {
	s.mu.Lock()
	defer s.mu.Unlock()
	return s.b.Write(p)
}

func (s *syncBuffer) String() string {
	s.mu.Lock()
	defer s.mu.Unlock()
	return s.b.String()
}

func start(t *testing.T, name string, stdout io.Writer, args ...string) *proc {
	t.Helper()
	p := &proc{t: t, name: name, out: &syncBuffer{}, done: make(chan struct{})}
	p.cmd = exec.Command(binary, args...)
	p.cmd.Stderr = p.out
	p.cmd.Stdout = p.out
	if stdout != nil {
		p.cmd.Stdout = stdout
	}
	p.cmd.SysProcAttr = &syscall.SysProcAttr{Pdeathsig: syscall.SIGKILL}
	if err := p.cmd.Start(); err != nil {
		t.Fatal(err)
	}
	go func() {
		_ = p.cmd.Wait()
		close(p.done)
	}()
	t.Cleanup(func() {
		p.kill()
		if t.Failed() {
			t.Logf("--- output of %s:\n%s", p.name, p.out.String())
		}
	})
	return p
}

func (p *proc) kill() {
	_ = p.cmd.Process.Kill()
	<-p.done
}

// network is a pool process and worker processes.
type network struct {
	t        *testing.T
	dir      string
	poolAddr string
	pool     *proc
	workers  []*proc
	token    string
}

func freeAddr(t *testing.T) string {
	l, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	defer l.Close()
	return l.Addr().String()
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

func (n *network) startWorker(id string) *proc {
	return start(n.t, id, nil, "worker", "--id", id, "--pool", n.poolAddr, "--listen", "127.0.0.1:0",
		"--examples", "--join-token-file", filepath.Join(n.dir, "join.token"), "--log-level", "debug",
		"--data-dir", filepath.Join(n.dir, "workers", id))
}

func (n *network) startPool() {
	n.pool = start(n.t, "pool", nil, "pool", "--listen", n.poolAddr, "--data-dir", n.dir, "--lease-ttl", "2s",
		"--repair-grace", "1s", "--log-level", "debug")
	deadline := time.Now().Add(20 * time.Second)
	for {
		b, err := os.ReadFile(filepath.Join(n.dir, "admin.token"))
		if err == nil {
			n.token = strings.TrimSpace(string(b))
			if c, err := taskworker.Dial(n.poolAddr, taskworker.WithToken(n.token)); err == nil {
				ctx, cancel := context.WithTimeout(context.Background(), time.Second)
				_, err = c.Workers(ctx)
				cancel()
				c.Close()
				if err == nil {
					return
				}
			}
		}
		if time.Now().After(deadline) {
			n.t.Fatal("the pool did not come up")
		}
		time.Sleep(50 * time.Millisecond)
	}
}

func (n *network) client() *taskworker.Client {
	c, err := taskworker.Dial(n.poolAddr, taskworker.WithToken(n.token))
	if err != nil {
		n.t.Fatal(err)
	}
	n.t.Cleanup(func() { c.Close() })
	return c
}

// cli runs a client command against the network and returns its stdout.
func (n *network) cli(args ...string) (string, error) {
	cmd := exec.Command(binary, args...)
	cmd.Env = append(os.Environ(), "TASKWORKER_POOL="+n.poolAddr, "TASKWORKER_TOKEN="+n.token)
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
