package proctest

import (
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
	"time"

	"github.com/hivemind/taskworker"
	"github.com/hivemind/taskworker/internal/pki"
)

// Build builds cmd/taskworker into dir and returns the binary's path.
func Build(dir string) (string, error) {
	binary := filepath.Join(dir, "taskworker")
	out, err := exec.Command("go", "build", "-o", binary, "github.com/hivemind/taskworker/cmd/taskworker").CombinedOutput()
	if err != nil {
		return "", fmt.Errorf("building taskworker: %v\n%s", err, out)
	}
	return binary, nil
}

// FreeAddr returns a 127.0.0.1 address whose port was free a moment ago.
func FreeAddr() (string, error) {
	l, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		return "", err
	}
	defer l.Close()
	return l.Addr().String(), nil
}

// Process is a child process of Exe with Args, called Name in messages.
// Start may be called again once a run has ended, with the same arguments.
type Process struct {
	Name, Exe string
	Args      []string
	// Log is the file every run appends its output to, after a line with
	// its start time; Stdout, if set, receives the standard output instead.
	Log    string
	Stdout io.Writer

	mu   sync.Mutex
	cmd  *exec.Cmd
	done chan struct{}
}

// Start starts a run of the process.
func (p *Process) Start() error {
	p.mu.Lock()
	defer p.mu.Unlock()
	log, err := os.OpenFile(p.Log, os.O_CREATE|os.O_WRONLY|os.O_APPEND, 0o600)
	if err != nil {
		return err
	}
	fmt.Fprintf(log, "=== %s start\n", time.Now().Format(time.RFC3339Nano))
	cmd := exec.Command(p.Exe, p.Args...)
	cmd.Stdout, cmd.Stderr = log, log
	if p.Stdout != nil {
		cmd.Stdout = p.Stdout
	}
	cmd.SysProcAttr = &syscall.SysProcAttr{Pdeathsig: syscall.SIGKILL}
	if err := cmd.Start(); err != nil {
		log.Close()
		return fmt.Errorf("starting %s: %w", p.Name, err)
	}
	p.cmd, p.done = cmd, make(chan struct{})
	go func(done chan struct{}) {
		_ = cmd.Wait()
		log.Close()
		close(done)
	}(p.done)
	return nil
}

// Pid is the process ID of the current run.
func (p *Process) Pid() int {
	p.mu.Lock()
	defer p.mu.Unlock()
	return p.cmd.Process.Pid
}

// Signal sends sig to the current run.
func (p *Process) Signal(sig os.Signal) error {
	p.mu.Lock()
	defer p.mu.Unlock()
	return p.cmd.Process.Signal(sig)
}

// Stop SIGSTOPs the current run and waits until every thread of it is
// stopped: kill(2) returns once the signal is queued, and a thread running
// on another CPU, or waiting for one, may do some work before it stops.
func (p *Process) Stop() error {
	if err := p.Signal(syscall.SIGSTOP); err != nil {
		return err
	}
	pid := p.Pid()
	deadline := time.Now().Add(10 * time.Second)
	for {
		running, err := runningThreads(pid)
		if err != nil || running == 0 {
			return err
		}
		if time.Now().After(deadline) {
			return fmt.Errorf("%s: %d threads still running 10 s after SIGSTOP", p.Name, running)
		}
		time.Sleep(time.Millisecond)
	}
}

// runningThreads counts the threads of process pid that are not stopped.
func runningThreads(pid int) (int, error) {
	dir := fmt.Sprintf("/proc/%d/task", pid)
	tids, err := os.ReadDir(dir)
	if err != nil {
		return 0, err
	}
	n := 0
	for _, t := range tids {
		stat, err := os.ReadFile(filepath.Join(dir, t.Name(), "stat"))
		if err != nil {
			continue // the thread ended
		}
		// "tid (comm) S ...": the state follows the last parenthesis.
		if i := bytes.LastIndexByte(stat, ')'); i < 0 || i+2 >= len(stat) || stat[i+2] != 'T' {
			n++
		}
	}
	return n, nil
}

// Kill SIGKILLs the current run, if any, and waits for it to end.
func (p *Process) Kill() {
	if done := p.Done(); done != nil {
		_ = p.Signal(syscall.SIGKILL)
		<-done
	}
}

// Done is closed when the current run ends; it is nil before Start.
func (p *Process) Done() <-chan struct{} {
	p.mu.Lock()
	defer p.mu.Unlock()
	return p.done
}

// ExitCode is the exit code of the run, once Done is closed: -1 if killed.
func (p *Process) ExitCode() int {
	p.mu.Lock()
	defer p.mu.Unlock()
	return p.cmd.ProcessState.ExitCode()
}

// Output is what the runs wrote to Log.
func (p *Process) Output() string {
	b, _ := os.ReadFile(p.Log)
	return string(b)
}

// WaitPool waits until the pool p serves at addr with the admin token it
// writes to tokenFile, verified by the CA certificate in caFile (empty:
// ca.crt beside tokenFile, where a pool makes it), and returns the token;
// it fails if p exits first.
func WaitPool(ctx context.Context, p *Process, addr, tokenFile, caFile string) (string, error) {
	if caFile == "" {
		caFile = filepath.Join(filepath.Dir(tokenFile), pki.CACertFile)
	}
	for {
		b, _ := os.ReadFile(tokenFile)
		if tok := strings.TrimSpace(string(b)); tok != "" {
			if c, err := taskworker.Dial(addr, taskworker.WithToken(tok), taskworker.WithCAFile(caFile)); err == nil {
				cctx, cancel := context.WithTimeout(ctx, time.Second)
				_, err = c.Workers(cctx)
				cancel()
				c.Close()
				if err == nil {
					return tok, nil
				}
			}
		}
		select {
		case <-p.Done():
			return "", fmt.Errorf("%s exited before it served", p.Name)
		case <-ctx.Done():
			return "", fmt.Errorf("%s did not serve at %s: %w", p.Name, addr, ctx.Err())
		case <-time.After(50 * time.Millisecond):
		}
	}
}
