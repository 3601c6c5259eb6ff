package starlarkrun

import (
	"bufio"
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"os"
	"os/exec"
	"strings"
	"sync"
	"syscall"
	"time"
)

// class is what a child is started for: calls of one class share children.
// The memory limit is fixed for a child's life (it is an rlimit); calls of
// different tenants never share one.
type class struct {
	memory int64
	tenant string
}

// process is the parent's handle on one child.
type process struct {
	class  class
	cmd    *exec.Cmd
	stdin  *os.File // the parent's ends of the pipes
	stdout *os.File
	w      *bufio.Writer
	r      *bufio.Reader
	stderr *headBuffer
	ready  readyMsg

	// exited is closed once the child has exited and its stderr is read.
	exited chan struct{}
}

// hostCallLimit bounds a host call frame from a child: a log line, JSON-escaped.
const hostCallLimit = 512 * KiB

// stderrKept is how much of a child's stderr is kept, from the start: the Go
// runtime writes the reason for a fatal error first.
const stderrKept = 8 * KiB

// startProcess starts a child for cl and waits until it is ready. track runs
// the goroutine that waits for the child's exit, or reports false when the
// pool is closed, in which case startProcess cleans up and fails.
func startProcess(ctx context.Context, cfg *Config, cl class, track func(func()) bool) (*process, error) {
	childIn, parentOut, err := blockingPipe()
	if err != nil {
		return nil, fmt.Errorf("%w: %w", ErrStart, err)
	}
	parentIn, childOut, err := blockingPipe()
	if err != nil {
		childIn.Close()
		parentOut.Close()
		return nil, fmt.Errorf("%w: %w", ErrStart, err)
	}
	p := &process{
		class:  cl,
		stdin:  parentOut,
		stdout: parentIn,
		w:      bufio.NewWriterSize(parentOut, 64*KiB),
		r:      bufio.NewReaderSize(parentIn, 64*KiB),
		stderr: &headBuffer{max: stderrKept},
		exited: make(chan struct{}),
	}
	p.cmd = &exec.Cmd{
		Path:   cfg.Command[0],
		Args:   cfg.Command,
		Env:    []string{}, // empty, not inherited
		Dir:    "/",
		Stdin:  childIn,
		Stdout: childOut,
		Stderr: p.stderr,
		// Only stdin, stdout and stderr are passed: every descriptor the
		// worker opened is close-on-exec, and the child closes any it
		// inherited from the worker's own parent.
		SysProcAttr: childProcAttr(),
		// Stderr is copied by a goroutine of exec's; bound how long Wait
		// waits for it after the child is gone.
		WaitDelay: time.Second,
	}
	err = p.cmd.Start()
	childIn.Close()
	childOut.Close()
	if err != nil {
		p.closePipes()
		return nil, fmt.Errorf("%w: %s: %w", ErrStart, cfg.Command[0], err)
	}
	if !track(func() {
		p.cmd.Wait() // its error is in ProcessState, or a stderr copy cut by WaitDelay
		p.closePipes()
		close(p.exited)
	}) {
		p.cmd.Process.Kill()
		p.cmd.Wait()
		p.closePipes()
		return nil, ErrClosed
	}

	ctx, cancel := context.WithTimeout(ctx, cfg.StartTimeout)
	defer cancel()
	stop := context.AfterFunc(ctx, p.kill)
	err = p.handshake(cfg, cl)
	if !stop() || err != nil {
		p.kill()
		<-p.exited
		switch {
		case ctx.Err() == context.DeadlineExceeded:
			return nil, fmt.Errorf("%w: %s did not report ready within %s%s", ErrStart, cfg.Command[0], cfg.StartTimeout, p.stderrSummary())
		case ctx.Err() != nil:
			return nil, fmt.Errorf("%w: %w", ErrStart, context.Cause(ctx))
		}
		return nil, fmt.Errorf("%w: %s did not start as a Starlark child (is %q the argument its main passes to starlarkrun.Main?): %v%s",
			ErrStart, cfg.Command[0], strings.Join(cfg.Command[1:], " "), err, p.stderrSummary())
	}
	return p, nil
}

func (p *process) handshake(cfg *Config, cl class) error {
	err := writeJSONFrame(p.w, frameHello, helloMsg{
		Memory:          cl.memory,
		ScriptsCached:   cfg.ScriptsPerChild,
		MaxLogLine:      cfg.MaxLogLine,
		MaxLogLines:     cfg.MaxLogLinesPerCall,
		MaxErrorMessage: 1 * KiB,
	})
	if err != nil {
		return err
	}
	typ, payload, err := readFrame(p.r, func(byte) int { return maxControlFrame })
	if err != nil {
		return err
	}
	if typ != frameReady {
		return fmt.Errorf("first frame is %q, not ready", typ)
	}
	return json.Unmarshal(payload, &p.ready)
}

// blockingPipe is os.Pipe without the runtime's poller: a call's goroutine
// reads its child's answer with one blocking read(2), which costs less per
// call than a non-blocking read, a park and a wake-up through epoll
// (docs/rationale-starlark.md, "What does a call cost?"). A read still ends
// when the child dies, as its end of the pipe closes.
func blockingPipe() (r, w *os.File, err error) {
	var fds [2]int
	if err := syscall.Pipe2(fds[:], syscall.O_CLOEXEC); err != nil {
		return nil, nil, fmt.Errorf("pipe2: %w", err)
	}
	return os.NewFile(uintptr(fds[0]), "|0"), os.NewFile(uintptr(fds[1]), "|1"), nil
}

// kill ends the child at once. It is safe to call at any time, from any
// goroutine, any number of times.
func (p *process) kill() {
	p.cmd.Process.Kill() // os.Process knows when the child is reaped, so this never hits a reused pid
}

func (p *process) closePipes() {
	p.stdin.Close()
	p.stdout.Close()
}

// alive reports whether the child has not exited.
func (p *process) alive() bool {
	select {
	case <-p.exited:
		return false
	default:
		return true
	}
}

// callFrame is one call as the parent sends it, with what it needs to
// answer the child.
type callFrame struct {
	msg    callMsg
	source []byte
	host   *hostCallState
	pool   *Pool
	// hostCalls counts the host builtins the script called: without them a
	// script has no effect outside its child.
	hostCalls int
}

// childError is a call that ended with an error frame: the child is fine
// unless the kind says otherwise.
type childError struct {
	msg errorMsg
}

func (e *childError) Error() string { return e.msg.Kind + ": " + e.msg.Message }

// exchange runs one call on the child: it sends the call, answers the
// child's requests for the source and for host builtins, and returns the
// result. An error is a *childError, or a pipe or protocol error after
// which the child must be killed.
func (p *process) exchange(ctx context.Context, c *callFrame) ([]byte, error) {
	if err := writeJSONFrame(p.w, frameCall, c.msg); err != nil {
		return nil, fmt.Errorf("%w: %w", errNotSent, err)
	}
	limit := func(typ byte) int {
		switch typ {
		case frameResult:
			return c.msg.MaxOutput
		case frameHostCall:
			return hostCallLimit
		}
		return maxControlFrame
	}
	for {
		typ, payload, err := readFrame(p.r, limit)
		if errors.Is(err, errFrameTooLarge) && typ == frameResult {
			return nil, errResultTooLargeFrame
		}
		if err != nil {
			return nil, err
		}
		switch typ {
		case frameResult:
			return payload, nil
		case frameError:
			var e childError
			if err := json.Unmarshal(payload, &e.msg); err != nil {
				return nil, fmt.Errorf("bad error frame: %w", err)
			}
			return nil, &e
		case frameNeedSource:
			if string(payload) != c.msg.Hash {
				return nil, fmt.Errorf("child asked for the source of another script")
			}
			err = writeFrame(p.w, frameSource, c.source)
		case frameHostCall:
			c.hostCalls++
			err = p.serveHostCall(ctx, c, payload)
		default:
			return nil, fmt.Errorf("unexpected %q frame during a call", typ)
		}
		if err != nil {
			return nil, err
		}
	}
}

// serveHostCall answers one host builtin call. A failing builtin is an
// error for the script, not for the pipe.
func (p *process) serveHostCall(ctx context.Context, c *callFrame, payload []byte) error {
	var reply hostReplyMsg
	var m hostCallMsg
	if err := json.Unmarshal(payload, &m); err != nil {
		return fmt.Errorf("bad host call frame: %w", err)
	}
	if handle, ok := hostHandlers[m.Name]; !ok {
		reply.Error = fmt.Sprintf("no host builtin %q", m.Name)
	} else if result, err := handle(ctx, c.pool, c.host, m.Args); err != nil {
		reply.Error = err.Error()
	} else {
		reply.Result = result
	}
	return writeJSONFrame(p.w, frameHostReply, reply)
}

// exitSummary says how the child ended, once it has.
func (p *process) exitSummary() string {
	state := p.cmd.ProcessState
	if state == nil {
		return "not started"
	}
	return state.String()
}

// exitCode is the child's exit code, or -1 when a signal ended it.
func (p *process) exitCode() int {
	if p.cmd.ProcessState == nil {
		return -1
	}
	return p.cmd.ProcessState.ExitCode()
}

// stderrSummary is the first line the child wrote to stderr, for messages.
func (p *process) stderrSummary() string {
	line, _, _ := strings.Cut(strings.TrimSpace(p.stderr.String()), "\n")
	if line == "" {
		return ""
	}
	return ": " + truncate(line, 200)
}

// outOfMemory reports whether a child that died did so for lack of memory:
// its address-space cap (the Go runtime's fatal "out of memory" and its
// kin), or a goroutine stack past its limit.
func (p *process) outOfMemory() bool {
	if p.exitCode() == exitMemory {
		return true
	}
	s := p.stderr.String()
	for _, sign := range []string{
		"out of memory", "cannot allocate memory", "stack exceeds", "failed to create new OS thread",
		"ThreadSanitizer failed to allocate", // race-detector builds, in tests
	} {
		if strings.Contains(s, sign) {
			return true
		}
	}
	return false
}

// errResultTooLargeFrame is a result frame over the call's MaxOutput: the
// child should have sent an error instead, so it is not trusted further.
var errResultTooLargeFrame = errors.New("result frame over the output limit")

// headBuffer keeps the first max bytes written to it and drops the rest.
type headBuffer struct {
	mu  sync.Mutex
	buf []byte
	max int
}

func (b *headBuffer) Write(p []byte) (int, error) {
	b.mu.Lock()
	defer b.mu.Unlock()
	if room := b.max - len(b.buf); room > 0 {
		b.buf = append(b.buf, p[:min(room, len(p))]...)
	}
	return len(p), nil
}

func (b *headBuffer) String() string {
	b.mu.Lock()
	defer b.mu.Unlock()
	return string(b.buf)
}
