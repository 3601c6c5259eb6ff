package sandbox

import (
	"context"
	"encoding/binary"
	"encoding/json"
	"errors"
	"fmt"
	"log/slog"
	"strings"
	"time"

	"github.com/hivemind/taskworker/internal/childproc"
)

// runner runs a Module's calls one at a time: an instance in this process,
// or a child process holding one (Config.ChildCommand).
type runner interface {
	// run makes one call and says whether the runner may serve another.
	run(ctx context.Context, input []byte) (out []byte, keep bool, err error)
	close(ctx context.Context)
}

// isolated reports whether calls run in child processes.
func (c Config) isolated() bool { return len(c.ChildCommand) > 0 }

// defaultChildStartTimeout bounds a child's start when the Config does not.
const defaultChildStartTimeout = 30 * time.Second

// child is a Module's handle on one child process, which holds one
// instance of the module.
type child struct {
	m     *Module
	proc  *childproc.Process
	ready childReady
}

// startChild starts a child process for m and waits until it has loaded
// the module. An error the child reports about the module has this
// package's sentinel, as Load would.
func (m *Module) startChild(ctx context.Context) (*child, error) {
	cfg := m.rt.cfg
	header, err := json.Marshal(childHello{
		Spec: m.spec, CacheDir: cfg.CacheDir,
		MaxLogLine: cfg.MaxLogLine, MaxLogLinesPerCall: cfg.MaxLogLinesPerCall,
	})
	if err != nil {
		return nil, err
	}
	hello := make([]byte, 0, 4+len(header)+len(m.wasm))
	hello = binary.BigEndian.AppendUint32(hello, uint32(len(header)))
	hello = append(append(hello, header...), m.wasm...)
	timeout := cfg.ChildStartTimeout
	if timeout == 0 {
		timeout = defaultChildStartTimeout
	}
	proc, payload, err := childproc.Start(ctx, childproc.Spec{
		Command: cfg.ChildCommand, Hello: hello, StartTimeout: timeout, Track: m.track,
	})
	switch {
	case errors.Is(err, childproc.ErrClosed):
		return nil, fmt.Errorf("function: %w", ErrClosed)
	case err != nil:
		return nil, fmt.Errorf("%w: starting its process (%s): %v", ErrTrap, cfg.ChildCommand[0], err)
	}
	c := &child{m: m, proc: proc}
	if err := json.Unmarshal(payload, &c.ready); err != nil {
		c.kill()
		return nil, fmt.Errorf("%w: its process sent a bad ready frame: %v", ErrTrap, err)
	}
	if c.ready.Error != nil {
		c.kill()
		return nil, c.ready.Error.err()
	}
	m.created.Add(1)
	if c.ready.FromDisk {
		m.fromDisk.Add(1)
	}
	m.mu.Lock()
	if m.closed { // Close has killed the others already
		m.mu.Unlock()
		c.kill()
		return nil, fmt.Errorf("function: %w", ErrClosed)
	}
	m.children[c] = struct{}{}
	m.mu.Unlock()
	return c, nil
}

// startSpare starts a child in the background, so that the next call does
// not wait for a process to start (30-90 ms): when a call takes the last
// idle one, and in the place of one that was killed. It does nothing when
// the module has Spec.Concurrency children, counting those starting, or is
// closed.
func (m *Module) startSpare() {
	m.mu.Lock()
	if m.closed || len(m.children)+m.starting >= m.spec.Concurrency {
		m.mu.Unlock()
		return
	}
	m.starting++
	m.mu.Unlock()
	started := m.track(func() {
		ctx, cancel := context.WithCancel(context.Background())
		defer cancel()
		go func() { // Close stops a start in progress
			select {
			case <-m.done:
				cancel()
			case <-ctx.Done():
			}
		}()
		c, err := m.startChild(ctx)
		m.mu.Lock()
		m.starting--
		m.mu.Unlock()
		if err != nil {
			select {
			case <-m.done:
			default:
				m.rt.logger.Error("sandbox: cannot start a process for a function", "export", m.spec.Export, "error", err)
			}
			return
		}
		m.put(ctx, c, true)
	})
	if !started {
		m.mu.Lock()
		m.starting--
		m.mu.Unlock()
	}
}

// track runs f, the wait for a child's exit, on a goroutine Close waits
// for, unless the module is closed.
func (m *Module) track(f func()) bool {
	m.mu.Lock()
	defer m.mu.Unlock()
	if m.closed {
		return false
	}
	m.procs.Add(1)
	go func() {
		defer m.procs.Done()
		f()
	}()
	return true
}

// kill ends the child and waits for it.
func (c *child) kill() {
	c.proc.Kill()
	<-c.proc.Exited()
	c.m.mu.Lock()
	delete(c.m.children, c)
	c.m.mu.Unlock()
}

func (c *child) close(context.Context) { c.kill() }

// run sends one call to the child and waits for its answer, killing the
// child when the call's time is up.
func (c *child) run(ctx context.Context, input []byte) ([]byte, bool, error) {
	m := c.m
	callCtx, cancel := context.WithTimeout(ctx, m.spec.Timeout)
	defer cancel()
	start := time.Now()
	stop := context.AfterFunc(callCtx, c.proc.Kill)
	out, err := c.exchange(ctx, input)
	killed := !stop()
	var remote *remoteError
	var guest *GuestError
	switch {
	case err == nil:
		// A result that came as the deadline passed stands; the child,
		// killed, does not.
		return out, !killed, nil
	case !killed && (errors.As(err, &remote) || errors.As(err, &guest)):
		// The child reported the error. When it threw its instance
		// away (a trap, a memory overrun), the process goes too: what
		// went wrong in the instance may have touched the process.
		if remote != nil && remote.discarded {
			c.kill()
			return nil, false, err
		}
		return nil, true, err
	}
	c.kill()
	elapsed := time.Since(start).Round(time.Millisecond)
	select {
	case <-m.done:
		return nil, false, fmt.Errorf("%w: the function was stopped by Close: it was undeployed or the worker is stopping", ErrClosed)
	default:
	}
	switch {
	case killed && errors.Is(ctx.Err(), context.Canceled):
		return nil, false, fmt.Errorf("%w after %s: %w", ErrCanceled, elapsed, ctx.Err())
	case killed && ctx.Err() != nil && m.callerFirst(ctx, start):
		return nil, false, fmt.Errorf("%w: the caller's deadline passed after %s, before the function finished: give the call more time",
			ErrTimeout, elapsed)
	case killed:
		return nil, false, fmt.Errorf("%w: the function ran past its time limit of %s and was stopped: make it faster, or deploy it with a longer timeout",
			ErrTimeout, m.spec.Timeout)
	case errors.Is(err, errChildOutput):
		return nil, false, fmt.Errorf("%w: the function returned more than its limit of %s: return less, or deploy it with a higher output limit",
			ErrOutputTooLarge, formatBytes(int64(m.spec.MaxOutput)))
	case c.proc.OutOfMemory(-1):
		return nil, false, fmt.Errorf("%w: the function's process ran out of memory (its limit is %s of linear memory) and was stopped: use less memory, or deploy it with more",
			ErrMemoryLimit, formatBytes(m.spec.MemoryLimit))
	}
	m.rt.logger.WarnContext(ctx, "sandbox: a function's process died during a call", "export", m.spec.Export,
		"pid", c.ready.PID, "exit", c.proc.ExitSummary(), "error", err, "stderr", c.proc.Stderr())
	return nil, false, fmt.Errorf("%w: the function's process ended during the call (%s%s)",
		ErrTrap, c.proc.ExitSummary(), c.proc.StderrSummary())
}

// replySpin is how long a call polls for its child's answer before it
// blocks in a read, when no other call of the function runs (callSpin).
const replySpin = 100 * time.Microsecond

// callErrorKinds are the errors a call in a child can end with; a child
// that sends another kind is not trusted further.
var callErrorKinds = map[string]bool{
	"guest": true, "input": true, "output": true, "timeout": true, "memory": true, "trap": true, "canceled": true,
}

// errChildOutput is a result frame over the output limit: the child should
// have sent an error instead, so it is not trusted further.
var errChildOutput = errors.New("result frame over the output limit")

// exchange writes the call and reads the child's frames until its answer.
func (c *child) exchange(ctx context.Context, input []byte) ([]byte, error) {
	m := c.m
	typ := byte(frameCall)
	quiet := len(m.slots) <= 1 // no other call of this function runs
	if quiet {
		typ = frameCallQuiet
	}
	if err := childproc.WriteFrame(c.proc.W, typ, input); err != nil {
		return nil, err
	}
	limit := func(typ byte) int {
		switch typ {
		case frameResult:
			return m.spec.MaxOutput
		case frameLog:
			return 8*m.rt.cfg.MaxLogLine + 64 // JSON-escaped
		}
		return childproc.MaxControlFrame
	}
	lines, dropped := 0, 0
	defer func() {
		if dropped > 0 {
			m.rt.logger.WarnContext(ctx, "sandbox: dropped guest log lines over the limit",
				"export", m.spec.Export, "dropped", dropped)
		}
	}()
	for {
		if quiet {
			c.proc.Spin(replySpin)
		}
		typ, payload, err := childproc.ReadFrame(c.proc.R, limit)
		if typ == frameResult && errors.Is(err, childproc.ErrFrameTooLarge) {
			return nil, errChildOutput
		}
		if err != nil {
			return nil, err
		}
		switch typ {
		case frameResult:
			return payload, nil
		case frameError:
			var e errorMsg
			if err := json.Unmarshal(payload, &e); err != nil {
				return nil, fmt.Errorf("bad error frame: %w", err)
			}
			if !callErrorKinds[e.Kind] {
				return nil, fmt.Errorf("error frame of kind %q during a call", e.Kind)
			}
			return nil, e.err()
		case frameLog:
			var l logMsg
			if err := json.Unmarshal(payload, &l); err != nil {
				return nil, fmt.Errorf("bad log frame: %w", err)
			}
			// The child cut and counted its lines already; a child is
			// not trusted to have done so.
			lines++
			if lines > m.rt.cfg.MaxLogLinesPerCall || !m.logLimit.allow(time.Now()) {
				dropped++
				continue
			}
			if len(l.Msg) > m.rt.cfg.MaxLogLine {
				l.Msg = strings.ToValidUTF8(l.Msg[:m.rt.cfg.MaxLogLine], "") + " [cut]"
			}
			m.host.Log(ctx, min(max(l.Level, slog.LevelDebug), slog.LevelError), l.Msg)
		default:
			return nil, fmt.Errorf("unexpected %q frame during a call", typ)
		}
	}
}
