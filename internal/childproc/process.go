package childproc

import (
	"bufio"
	"context"
	"errors"
	"fmt"
	"io"
	"os"
	"os/exec"
	"runtime"
	"strings"
	"sync"
	"syscall"
	"time"
	"unsafe"

	"golang.org/x/sys/unix"
)

// The two frames every child starts with: the parent sends FrameHello,
// whose payload configures the child for its life, and the child answers
// FrameReady once it is set up and hardened. What follows is the payload's
// own protocol.
const (
	FrameHello = 'H'
	FrameReady = 'R'
)

// MaxControlFrame bounds the frames that carry no user data of unbounded
// size (ready, errors), on the parent's side.
const MaxControlFrame = 64 * KiB

// stderrKept is how much of a child's stderr is kept, from the start: the Go
// runtime writes the reason for a fatal error first.
const stderrKept = 8 * KiB

// Spec is how to start a child.
type Spec struct {
	// Command is the child's argv: the worker binary and the argument that
	// makes its main run the payload's child entry point.
	Command []string
	// Hello is the payload of the hello frame.
	Hello []byte
	// StartTimeout bounds the time from exec to the ready frame.
	StartTimeout time.Duration
	// Track runs the goroutine that waits for the child's exit, on the
	// caller's accounting (so that it can wait for it at close), or
	// reports false when the caller is closed (Supervisor.Track does
	// both): Start then kills the child and fails with ErrClosed.
	Track func(func()) bool
	// Class names the kind of child for Counts ("wasm", "starlark"); empty:
	// not counted.
	Class string
	// Poll makes the parent's ends of the pipes RawPipes: a call waiting
	// for its answer parks its goroutine in the runtime's poller rather
	// than hold a thread in a blocking read(2), and neither side's reads
	// and writes wake the runtime's monitor thread (docs/RATIONALE.md,
	// "Why does the worker wait for a WebAssembly child in the poller?").
	// Without it, the ends are Pipe's.
	Poll bool

	// noNamespaces starts the child without namespaces of its own whatever
	// the system allows, for the benchmark that measures what they cost.
	noNamespaces bool
}

// ExitUnconfined is the exit code of a child whose Harden refused to run
// unconfined; Start turns it into ErrUnconfined. Payloads' own exit codes
// must differ.
const ExitUnconfined = 6

// exitNoNamespaces is the exit code of a child whose namespaces were
// refused (enterNamespaces).
const exitNoNamespaces = 7

// namespacesEnv, in a child's environment, makes Attach run it again in
// namespaces of its own (enterNamespaces).
const namespacesEnv = "TASKWORKER_CHILD_NAMESPACES"

// ErrHandshake wraps Start's errors when the child started but did not
// answer the hello frame with a ready frame in time.
var ErrHandshake = errors.New("the child did not report ready")

// Process is the parent's handle on one child. Its pipe ends are for one
// goroutine at a time; Kill, Exited and Alive are safe from any.
type Process struct {
	W *bufio.Writer // the child's stdin
	R *bufio.Reader // the child's stdout
	// served counts the frames of its calls other than answers (log
	// lines, requests to the host), for CallBatch.
	served uint64

	cmd    *exec.Cmd
	stdin  io.Closer // the parent's ends of the pipes
	stdout io.Closer
	outFD  int // stdout's descriptor, for Spin
	stderr *HeadBuffer
	exited chan struct{}
	// namespaced says the child is in namespaces of its own.
	namespaced bool
	counts     *classCounts // nil: not counted
}

// Start starts a child, sends it the hello frame and returns it with the
// payload of its ready frame.
func Start(ctx context.Context, spec Spec) (*Process, []byte, error) {
	childIn, parentOut, err := Pipe()
	if err != nil {
		return nil, nil, err
	}
	parentIn, childOut, err := Pipe()
	if err != nil {
		childIn.Close()
		parentOut.Close()
		return nil, nil, err
	}
	p := &Process{
		stdin:  parentOut,
		stdout: parentIn,
		outFD:  int(parentIn.Fd()),
		stderr: &HeadBuffer{Max: stderrKept},
		exited: make(chan struct{}),
		counts: countsOf(spec.Class),
	}
	var r io.Reader = parentIn
	var w io.Writer = parentOut
	if spec.Poll {
		in, err1 := RawPipeOf(parentIn)
		out, err2 := RawPipeOf(parentOut)
		if err := errors.Join(err1, err2); err != nil {
			childIn.Close()
			childOut.Close()
			for _, end := range []*RawPipe{in, out} {
				if end != nil {
					end.Close()
				}
			}
			return nil, nil, err
		}
		p.stdin, p.stdout, w, r = out, in, out, in
		p.outFD = in.fd
	}
	p.W = bufio.NewWriterSize(w, 64*KiB)
	p.R = bufio.NewReaderSize(r, 64*KiB)
	p.namespaced = !spec.noNamespaces && tryNamespaces()
	env := []string{} // empty, not inherited
	if p.namespaced {
		env = []string{namespacesEnv + "=1"} // for Attach; the child proper gets none
	}
	p.cmd = &exec.Cmd{
		Path:   spec.Command[0],
		Args:   spec.Command,
		Env:    env,
		Dir:    "/",
		Stdin:  childIn,
		Stdout: childOut,
		Stderr: p.stderr,
		// Only stdin, stdout and stderr are passed: every descriptor the
		// worker opened is close-on-exec, and the child closes any it
		// inherited from the worker's own parent.
		SysProcAttr: procAttr(),
		// Stderr is copied by a goroutine of exec's; bound how long Wait
		// waits for it after the child is gone.
		WaitDelay: time.Second,
	}
	err = p.cmd.Start()
	childIn.Close()
	childOut.Close()
	if err != nil {
		p.closePipes()
		return nil, nil, fmt.Errorf("%s: %w", spec.Command[0], err)
	}
	if p.counts != nil {
		p.counts.started.Add(1)
		p.counts.alive.Add(1)
	}
	if !spec.Track(func() {
		p.cmd.Wait() // its error is in ProcessState, or a stderr copy cut by WaitDelay
		p.closePipes()
		p.exitCounted()
		close(p.exited)
	}) {
		p.cmd.Process.Kill()
		p.cmd.Wait()
		p.closePipes()
		p.exitCounted()
		return nil, nil, ErrClosed
	}

	ctx, cancel := context.WithTimeout(ctx, spec.StartTimeout)
	defer cancel()
	stop := context.AfterFunc(ctx, p.Kill)
	ready, err := p.handshake(spec.Hello)
	if !stop() || err != nil {
		p.Kill()
		<-p.exited
		switch {
		case p.ExitCode() == exitNoNamespaces && p.namespaced:
			// This system refuses the namespaces: start again without
			// them, and no later start asks again.
			namespacesRefused(strings.TrimPrefix(p.StderrSummary(), ": "))
			spec.noNamespaces = true
			return Start(ctx, spec)
		case p.ExitCode() == ExitUnconfined:
			return nil, nil, fmt.Errorf("%w%s. Run the worker where it can install seccomp filters "+
				"(Linux on amd64 or arm64, not inside a container or sandbox that forbids them), "+
				"or start it with --allow-unconfined to run function code without its filter", ErrUnconfined, p.StderrSummary())
		case ctx.Err() == context.DeadlineExceeded:
			return nil, nil, fmt.Errorf("%w within %s%s", ErrHandshake, spec.StartTimeout, p.StderrSummary())
		case ctx.Err() != nil:
			return nil, nil, context.Cause(ctx)
		}
		return nil, nil, fmt.Errorf("%w: %v%s", ErrHandshake, err, p.StderrSummary())
	}
	if p.namespaced {
		namespacesWorked()
	}
	return p, ready, nil
}

func (p *Process) handshake(hello []byte) ([]byte, error) {
	if err := WriteFrame(p.W, FrameHello, hello); err != nil {
		return nil, err
	}
	typ, payload, err := ReadFrame(p.R, func(byte) int { return MaxControlFrame })
	if err != nil {
		return nil, err
	}
	if typ != FrameReady {
		return nil, fmt.Errorf("first frame is %q, not ready", typ)
	}
	return payload, nil
}

// Pipe is os.Pipe without the runtime's poller: a call's goroutine reads
// its child's answer with one blocking read(2), which costs less per call
// than a non-blocking read, a park and a wake-up through epoll
// (docs/RATIONALE.md, "What does a call cost?" under Starlark; measured
// one call at a time: Spec.Poll is the other way, which WebAssembly
// children use). A read still ends when the child dies, as its end of the
// pipe closes.
func Pipe() (r, w *os.File, err error) {
	var fds [2]int
	if err := syscall.Pipe2(fds[:], syscall.O_CLOEXEC); err != nil {
		return nil, nil, fmt.Errorf("pipe2: %w", err)
	}
	return os.NewFile(uintptr(fds[0]), "|0"), os.NewFile(uintptr(fds[1]), "|1"), nil
}

// Spin waits up to d for the child to have written something, without
// sleeping (see Spin), and reports whether it has.
func (p *Process) Spin(d time.Duration) bool { return Spin(p.R, p.outFD, d) }

// Spin waits up to d for r, reading descriptor fd, to have bytes to read,
// polling without sleeping, and reports whether it has. Whoever expects an
// answer within microseconds spins before its blocking read, so that the
// answer does not also wait for its thread to be woken and scheduled (tens
// of microseconds on a virtual machine). Between polls it yields the CPU
// to any other thread that is ready to run on it and, when the process has
// one P, to its other goroutines (a spin would otherwise keep the one that
// receives the next call from running until it ends). Its system calls
// are raw
// (neither waits), so that a child's spin does not wake the runtime's
// monitor thread (RawPipe).
func Spin(r *bufio.Reader, fd int, d time.Duration) bool {
	if r.Buffered() > 0 {
		return true
	}
	fds := []unix.PollFd{{Fd: int32(fd), Events: unix.POLLIN}}
	var zero unix.Timespec
	// With one P, the process's other goroutines run only if the spin
	// lets them; with more, they run on the others, and a Gosched would
	// wake a thread to look for work at every poll.
	onlyP := runtime.GOMAXPROCS(0) == 1
	for start := time.Now(); time.Since(start) < d; {
		n, _, errno := unix.RawSyscall6(unix.SYS_PPOLL, uintptr(unsafe.Pointer(&fds[0])), 1, uintptr(unsafe.Pointer(&zero)), 0, 0, 0)
		if errno == 0 && n > 0 {
			return true
		}
		if onlyP {
			runtime.Gosched()
		}
		unix.RawSyscall(unix.SYS_SCHED_YIELD, 0, 0, 0)
	}
	return false
}

// Namespaced reports whether the child is in new user, mount and network
// namespaces (see Namespaces).
func (p *Process) Namespaced() bool { return p.namespaced }

// PID is the process id of the process Start started. With namespaces that
// is the parent of the one that runs the payload (enterNamespaces), whose
// own id a payload's ready frame may carry.
func (p *Process) PID() int { return p.cmd.Process.Pid }

// Kill ends the child at once. It is safe to call at any time, from any
// goroutine, any number of times.
func (p *Process) Kill() {
	p.cmd.Process.Kill() // os.Process knows when the child is reaped, so this never hits a reused pid
}

func (p *Process) exitCounted() {
	if p.counts != nil {
		p.counts.alive.Add(-1)
	}
}

func (p *Process) closePipes() {
	p.stdin.Close()
	p.stdout.Close()
}

// Exited is closed once the child has exited and its stderr is read.
func (p *Process) Exited() <-chan struct{} { return p.exited }

// Alive reports whether the child has not exited.
func (p *Process) Alive() bool {
	select {
	case <-p.exited:
		return false
	default:
		return true
	}
}

// ExitSummary says how the child ended, once it has.
func (p *Process) ExitSummary() string {
	state := p.cmd.ProcessState
	if state == nil {
		return "not ended"
	}
	return state.String()
}

// ExitCode is the child's exit code, or -1 when a signal ended it (or it
// has not ended).
func (p *Process) ExitCode() int {
	if p.cmd.ProcessState == nil {
		return -1
	}
	return p.cmd.ProcessState.ExitCode()
}

// Stderr is the start of what the child wrote to its stderr.
func (p *Process) Stderr() string { return p.stderr.String() }

// StderrSummary is the first line the child wrote to stderr, as ": line"
// for a message, or "".
func (p *Process) StderrSummary() string {
	line, _, _ := strings.Cut(strings.TrimSpace(p.stderr.String()), "\n")
	if line == "" {
		return ""
	}
	if len(line) > 200 {
		line = line[:200] + "..."
	}
	return ": " + line
}

// OutOfMemory reports whether a child that died did so for lack of memory:
// exitMemory, the exit code by which a payload says so itself, or the
// address-space cap (the Go runtime's fatal "out of memory" and its kin),
// or a goroutine stack past its limit.
func (p *Process) OutOfMemory(exitMemory int) bool {
	if p.ExitCode() == exitMemory {
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

// HeadBuffer keeps the first Max bytes written to it and drops the rest.
// It is safe for concurrent use.
type HeadBuffer struct {
	Max int

	mu  sync.Mutex
	buf []byte
}

func (b *HeadBuffer) Write(p []byte) (int, error) {
	b.mu.Lock()
	defer b.mu.Unlock()
	if room := b.Max - len(b.buf); room > 0 {
		b.buf = append(b.buf, p[:min(room, len(p))]...)
	}
	return len(p), nil
}

func (b *HeadBuffer) String() string {
	b.mu.Lock()
	defer b.mu.Unlock()
	return string(b.buf)
}
