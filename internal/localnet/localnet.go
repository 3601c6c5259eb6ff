// Package localnet runs a whole TaskWorker network on one machine, the
// embedded default behind `taskworker up`: an embedded etcd and a pool in
// this process, and N worker processes (this binary's `worker` command),
// all on 127.0.0.1, with their data under one directory.
//
// It is the same components as a real network, only started together: the
// workers are separate processes that register with the pool over gRPC, and
// are restarted if they exit.
package localnet

import (
	"bufio"
	"context"
	"errors"
	"fmt"
	"io"
	"log/slog"
	"os"
	"os/exec"
	"path/filepath"
	"strings"
	"sync"
	"syscall"
	"time"

	"github.com/hivemind/taskworker/internal/pool"
)

// Config configures a local network.
type Config struct {
	// Dir holds everything: pool/ (etcd, tokens), workers/, and env.
	Dir string
	// Workers is how many worker processes to run.
	Workers int
	// Listen is the pool's address.
	Listen string
	// Executable is the taskworker binary to run workers with.
	Executable string
	// LeaseTTL of the workers' registrations.
	LeaseTTL time.Duration
	// WorkerOutput receives the workers' logs, each line prefixed with its id.
	WorkerOutput io.Writer
	Logger       *slog.Logger
}

// Validate reports a configuration that cannot work, saying what to change.
func (c Config) Validate() error {
	if c.Dir == "" {
		return errors.New("no directory for the network: pass --dir")
	}
	if c.Workers < 1 || c.Workers > 64 {
		return fmt.Errorf("--workers %d: run 1 to 64 workers", c.Workers)
	}
	if c.Executable == "" {
		return errors.New("no taskworker executable to run workers with")
	}
	return nil
}

// Env is what a client needs to use the network.
type Env struct {
	Pool  string
	Token string
}

// String renders the env file's lines.
func (e Env) String() string {
	return fmt.Sprintf("TASKWORKER_POOL=%s\nTASKWORKER_TOKEN=%s\n", e.Pool, e.Token)
}

// EnvFile is the file in Dir where Run writes the Env while the network runs.
const EnvFile = "env"

// Run starts the network, calls ready once every worker has registered, and
// runs until ctx ends; then it stops the workers, drains the pool and
// removes the env file.
func Run(ctx context.Context, c Config, ready func(Env)) error {
	if err := c.Validate(); err != nil {
		return err
	}
	log := c.Logger
	if log == nil {
		log = slog.New(slog.DiscardHandler)
	}
	if err := os.MkdirAll(c.Dir, 0o700); err != nil {
		return err
	}
	pcfg := pool.DefaultConfig(filepath.Join(c.Dir, "pool"))
	pcfg.Listen = c.Listen
	pcfg.Logger = log
	if c.LeaseTTL > 0 {
		pcfg.LeaseTTL = c.LeaseTTL
	}
	p, err := pool.New(pcfg)
	if err != nil {
		return err
	}
	if err := p.Start(ctx); err != nil {
		return err
	}
	defer func() {
		sctx, cancel := context.WithTimeout(context.Background(), 15*time.Second)
		defer cancel()
		_ = p.Stop(sctx)
	}()

	wctx, stopWorkers := context.WithCancel(context.Background())
	var wg sync.WaitGroup
	defer wg.Wait()
	defer stopWorkers()
	out := c.WorkerOutput
	if out == nil {
		out = io.Discard
	}
	var outMu sync.Mutex
	for i := range c.Workers {
		id := fmt.Sprintf("worker_%03d", i+1)
		args := []string{"worker", "--id", id, "--pool", p.Addr(), "--listen", "127.0.0.1:0", "--examples",
			"--data-dir", filepath.Join(c.Dir, "workers", id),
			"--join-token-file", filepath.Join(pcfg.DataDir, pool.JoinTokenFile)}
		wg.Go(func() { supervise(wctx, log, c.Executable, args, id, &lockedWriter{w: out, mu: &outMu}) })
	}

	tick := time.NewTicker(50 * time.Millisecond)
	defer tick.Stop()
	timeout := time.After(60 * time.Second)
	for len(p.WorkerIDs()) < c.Workers {
		select {
		case <-ctx.Done():
			return nil
		case <-timeout:
			return fmt.Errorf("only %d of %d workers registered within a minute; see their logs above", len(p.WorkerIDs()), c.Workers)
		case <-tick.C:
		}
	}
	env := Env{Pool: p.Addr(), Token: p.AdminToken()}
	envPath := filepath.Join(c.Dir, EnvFile)
	if err := os.WriteFile(envPath, []byte(env.String()), 0o600); err != nil {
		return err
	}
	defer os.Remove(envPath)
	ready(env)
	<-ctx.Done()
	log.Info("stopping the network")
	return nil
}

// supervise runs a worker process, restarting it when it exits, until ctx
// ends; then it asks it to stop (SIGTERM) and kills it if it does not.
func supervise(ctx context.Context, log *slog.Logger, exe string, args []string, id string, out io.Writer) {
	for ctx.Err() == nil {
		cmd := exec.Command(exe, args...)
		cmd.Stdout = prefixWriter(out, id)
		cmd.Stderr = cmd.Stdout
		cmd.SysProcAttr = &syscall.SysProcAttr{Pdeathsig: syscall.SIGKILL}
		if err := cmd.Start(); err != nil {
			log.Error("starting worker", "worker", id, "err", err)
			return
		}
		exited := make(chan error, 1)
		go func() { exited <- cmd.Wait() }()
		select {
		case err := <-exited:
			log.Warn("worker exited; restarting it", "worker", id, "err", err)
			select {
			case <-ctx.Done():
			case <-time.After(time.Second):
			}
		case <-ctx.Done():
			_ = cmd.Process.Signal(syscall.SIGTERM)
			select {
			case <-exited:
			case <-time.After(10 * time.Second):
				_ = cmd.Process.Kill()
				<-exited
			}
		}
	}
}

type lockedWriter struct {
	w  io.Writer
	mu *sync.Mutex
}

func (l *lockedWriter) Write(p []byte) (int, error) {
	l.mu.Lock()
	defer l.mu.Unlock()
	return l.w.Write(p)
}

// prefixWriter returns a writer that copies lines to out, each prefixed with
// [id].
func prefixWriter(out io.Writer, id string) io.Writer {
	r, w := io.Pipe()
	go func() {
		sc := bufio.NewScanner(r)
		sc.Buffer(make([]byte, 64<<10), 1<<20)
		for sc.Scan() {
			fmt.Fprintf(out, "[%s] %s\n", id, strings.TrimRight(sc.Text(), "\r"))
		}
		_, _ = io.Copy(io.Discard, r)
	}()
	return w
}
