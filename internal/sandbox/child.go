package sandbox

import (
	"bufio"
	"context"
	"encoding/binary"
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"log/slog"
	"os"
	"time"

	"github.com/hivemind/taskworker/internal/callhost"
	"github.com/hivemind/taskworker/internal/childproc"
)

// ChildArg is the argument after which the worker binary runs ChildMain:
// its main calls ChildMain when its first argument is ChildArg, before
// anything else, and exits with the result. Config.ChildCommand is then
// {os.Executable(), ChildArg}.
const ChildArg = "__wasm-child"

// The pipe protocol of a WebAssembly child, after childproc's hello and
// ready frames: first one frameStart, which the child answers as a call
// once its guest's start-up has run (instance.start). Then each call is
// one frameCall (the input), after which the
// child sends any number of frameLog and frameHostOp (each answered by
// frameHostReply before the child goes on: the guest waits for its secret
// or its response) and ends the call with exactly one frameResult or
// frameError. The parent may send several calls at once (a batch,
// batch.go): the child runs them in order, keeping those it reads while
// it waits for a host reply, and may hold back the frameResult of a call
// that sent nothing else until its next write (childServer.answer).
//
// The hello payload is a 4-byte big-endian length, childHello as JSON, and
// the module's bytes; the ready payload is childReady.
const (
	frameCall = 'C' // parent: the input
	// frameCallQuiet is a call while no other call of the function runs:
	// both sides may spin for the other's next frame (callSpin).
	frameCallQuiet = 'c'
	// frameStart asks for the guest's start-up, before the first call.
	frameStart     = 's'
	frameLog       = 'l'                   // child: logMsg
	frameHostOp    = 'h'                   // child: callhost.Op, a secret read or a fetch for the call
	frameHostReply = 'r'                   // parent: callhost.Reply
	frameResult    = childproc.FrameResult // child: the output
	frameError     = childproc.FrameError  // child: errorMsg
)

// childHello configures a child for its life: one module, one Spec.
type childHello struct {
	Spec     Spec   `json:"spec"`
	CacheDir string `json:"cache_dir"`
	// MaxLogLine and MaxLogLinesPerCall are the parent's Config's; the
	// per-function rate is the parent's to apply.
	MaxLogLine         int `json:"max_log_line"`
	MaxLogLinesPerCall int `json:"max_log_lines"`
	// AllowUnconfined lets the child run without its seccomp filter when
	// it cannot install it (Config.AllowUnconfined).
	AllowUnconfined bool `json:"allow_unconfined,omitempty"`
}

// childReady is a child's report once it has loaded the module and
// hardened itself, or why it could not load it.
type childReady struct {
	PID          int       `json:"pid"`
	AddressSpace int64     `json:"address_space"`
	Hardening    string    `json:"hardening"`
	FromDisk     bool      `json:"from_disk"` // the compiled code came from CacheDir
	Error        *errorMsg `json:"error,omitempty"`
}

// logMsg is one guest log line.
type logMsg struct {
	Level slog.Level `json:"level"`
	Msg   string     `json:"msg"`
}

// errorMsg carries one of this package's errors across the pipe: the
// sentinel it wraps, by kind, and its message.
type errorMsg struct {
	Kind    string `json:"kind"`
	Message string `json:"message"`
	// Discarded says the child threw its instance away after this call
	// (it makes a new one for the next at once, in the same process).
	Discarded bool `json:"discarded,omitempty"`
}

// errorKinds are the errors a child reports, by kind: a call's error keeps
// its sentinel (and so its gRPC code) across the pipe.
var errorKinds = map[string]error{
	"input": ErrInputTooLarge, "output": ErrOutputTooLarge, "timeout": ErrTimeout, "memory": ErrMemoryLimit,
	"trap": ErrTrap, "busy": ErrBusy, "canceled": ErrCanceled, "closed": ErrClosed,
	"spec": ErrInvalidSpec, "notwasm": ErrNotWasm, "module": ErrInvalidModule, "import": ErrUnknownImport,
	"export": ErrMissingExport,
}

// toErrorMsg is err as a child sends it.
func toErrorMsg(err error) *errorMsg {
	var guest *GuestError
	if errors.As(err, &guest) {
		return &errorMsg{Kind: "guest", Message: guest.Message}
	}
	for kind, sentinel := range errorKinds {
		if errors.Is(err, sentinel) {
			return &errorMsg{Kind: kind, Message: err.Error()}
		}
	}
	return &errorMsg{Kind: "trap", Message: err.Error()}
}

// err is the error a child sent, with its sentinel.
func (e *errorMsg) err() error {
	if e.Kind == "guest" {
		return &GuestError{Message: e.Message}
	}
	sentinel, ok := errorKinds[e.Kind]
	if !ok {
		sentinel = ErrTrap
	}
	return &remoteError{sentinel: sentinel, msg: e.Message}
}

// remoteError is an error from a child: its message as the child wrote it
// (which starts with its sentinel's), and its sentinel for errors.Is.
type remoteError struct {
	sentinel error
	msg      string
}

func (e *remoteError) Error() string { return e.msg }
func (e *remoteError) Unwrap() error { return e.sentinel }

// Exit codes of ChildMain.
const (
	childExitOK       = 0 // the parent closed stdin
	childExitProtocol = 1 // the pipe broke or carried something unexpected
	childExitSetup    = 4 // the module or the hardening could not be set up (said in the ready frame)
)

// childHeap is the Go heap a child may have beyond its instance's linear
// memory: the runtime's and wazero's own structures, the input and output
// of a call, and the copy a memory grow makes while the old memory is
// still live.
func childHeap(spec Spec) int64 { return 2*spec.Memory + 32*MiB }

// ChildMain is a WebAssembly child process's entry point: it loads the
// module its parent sends, hardens the process, serves calls over stdin and
// stdout until stdin closes, and returns the exit code.
func ChildMain() int {
	// A child serves one call at a time: one P keeps the call's goroutine
	// on the thread that read its input (measured: a warm call of a Go
	// guest takes 53 µs in the child with one, 70 µs with two).
	outFile, err := childproc.Attach(1)
	if err != nil {
		fmt.Fprintln(os.Stderr, "wasm child:", err)
		return childExitSetup
	}
	// Both pipes are read and written with raw system calls, waiting in
	// the poller: see childproc.RawPipe, and docs/RATIONALE.md, "Why does
	// a child read and write its pipes with raw system calls?".
	stdin, err := childproc.NewRawPipe(0, "stdin")
	if err != nil {
		fmt.Fprintln(os.Stderr, "wasm child:", err)
		return childExitSetup
	}
	stdout, err := childproc.RawPipeOf(outFile)
	if err != nil {
		fmt.Fprintln(os.Stderr, "wasm child:", err)
		return childExitSetup
	}
	in := bufio.NewReaderSize(stdin, 64*KiB)
	out := bufio.NewWriterSize(stdout, 64*KiB)
	typ, payload, err := childproc.ReadFrame(in, func(byte) int { return maxChildFrame })
	if err != nil || typ != childproc.FrameHello || len(payload) < 4 {
		fmt.Fprintf(os.Stderr, "wasm child: no valid hello from the parent (frame %q, %v)\n", typ, err)
		return childExitProtocol
	}
	n := binary.BigEndian.Uint32(payload)
	var hello childHello
	if uint64(n) > uint64(len(payload)-4) || json.Unmarshal(payload[4:4+n], &hello) != nil {
		fmt.Fprintln(os.Stderr, "wasm child: bad hello")
		return childExitProtocol
	}
	wasm := payload[4+n:]

	c := &childServer{in: in, out: out, hold: holdAnswers(hello.Spec)}
	ready, m, err := c.load(hello, wasm)
	if err != nil {
		return childproc.ExitUnconfined // Harden said why
	}
	if err := childproc.WriteJSONFrame(out, childproc.FrameReady, ready); err != nil || ready.Error != nil {
		return childExitSetup
	}
	payload, wasm = nil, nil
	ctx := context.Background()
	var spin callSpin
	for {
		typ, input, err := c.next(&spin)
		if err == io.EOF {
			return childExitOK
		}
		if err == nil && typ == frameStart {
			if err := m.startIdle(ctx); err != nil {
				err = c.writeJSON(frameError, toErrorMsg(err))
			} else {
				err = c.write(frameResult, nil)
			}
			if err != nil {
				return childExitProtocol
			}
			continue
		}
		if err != nil || typ != frameCall && typ != frameCallQuiet {
			return childExitProtocol
		}
		spin.quiet = typ == frameCallQuiet
		discarded := m.discarded()
		sent := c.sent
		// The call's secrets and fetches are the worker's to carry out.
		output, err := m.Call(callhost.With(ctx, callhost.Remote(c.ask)), input)
		if err != nil {
			e := toErrorMsg(err)
			e.Discarded = m.discarded() > discarded
			err = c.writeJSON(frameError, e)
		} else {
			err = c.answer(output, c.sent > sent)
		}
		if err != nil {
			return childExitProtocol
		}
		spin.replied()
		if m.discarded() > discarded {
			// The instance trapped or outgrew its memory: make the next
			// one now, from the module compiled at start, so that the
			// next call finds it ready. If that fails, the next call
			// says why.
			_ = m.sup.Warm(ctx, struct{}{}, 1)
		}
	}
}

// callSpin decides how long a child polls for its next call before it
// blocks in a read. While calls come one at a time (the parent says so:
// frameCallQuiet) and less than maxCallSpin apart, it spins for twice the
// last gap, so that a steady stream of calls does not wait for the child to
// be woken each time (on a virtual machine, most of what a process
// boundary costs a call). It does not spin after a longer gap, nor when
// other calls of the function run, when the CPU it would burn is better
// spent on them (docs/RATIONALE.md, "What does a call cost").
type callSpin struct {
	quiet   bool          // the last call came as frameCallQuiet
	last    time.Time     // when the last reply went out
	lastGap time.Duration // between the last reply and the call that followed
}

const maxCallSpin = 1 * time.Millisecond

func (s *callSpin) wait(in *bufio.Reader) {
	if s.quiet && !s.last.IsZero() && s.lastGap < maxCallSpin {
		childproc.Spin(in, 0, min(2*s.lastGap, maxCallSpin))
	}
}

func (s *callSpin) arrived() {
	if !s.last.IsZero() {
		s.lastGap = time.Since(s.last)
	}
}

func (s *callSpin) replied() { s.last = time.Now() }

// maxQueuedCalls bounds the calls a child keeps while it waits for a host
// reply: a batch's, which the parent bounds too.
const maxQueuedCalls = maxBatch

// maxChildFrame bounds the frames a child reads from its trusted parent:
// a module, or an input.
const maxChildFrame = 256 * MiB

// childServer is a child's side of the pipe.
type childServer struct {
	in  *bufio.Reader
	out *bufio.Writer
	// queued are the calls of a batch read while a call waited for a
	// host reply, in order: the parent sends a batch's calls at once,
	// before the replies to the first's requests.
	queued []frame
	// sent counts the frames sent other than answers (log lines, host
	// requests); lastWrite is when the last write went out; hold is how
	// long after it answers may be held back (holdAnswers).
	sent      uint64
	lastWrite time.Time
	hold      time.Duration
}

// write sends one frame now, after any answers held back.
func (c *childServer) write(typ byte, payload []byte) error {
	err := childproc.WriteFrame(c.out, typ, payload)
	c.lastWrite = time.Now()
	return err
}

// writeJSON sends v as one frame, through write.
func (c *childServer) writeJSON(typ byte, v any) error {
	payload, err := json.Marshal(v)
	if err != nil {
		return err
	}
	return c.write(typ, payload)
}

// answer sends a call's result, or holds it back to go with the next
// answers in one write (see holdAnswers): when the call sent nothing else
// (sentOther), the next call of the batch is here to run, the answer fits
// in the buffer, and the last write went out less than c.hold ago.
// The parent arms each call's time limit as late, so that what
// runs while answers are held has had its own full time when the limit
// fires (childproc.CallBatch).
func (c *childServer) answer(output []byte, sentOther bool) error {
	if !sentOther && c.nextCallHere() && c.out.Available() >= 5+len(output) && time.Since(c.lastWrite) < c.hold {
		childproc.BufferFrame(c.out, frameResult, output)
		return nil
	}
	return c.write(frameResult, output)
}

// nextCallHere reports whether a whole call frame is buffered, to run
// without waiting.
func (c *childServer) nextCallHere() bool {
	if c.in.Buffered() < 5 {
		return false
	}
	hdr, _ := c.in.Peek(5)
	return (hdr[0] == frameCall || hdr[0] == frameCallQuiet) && c.in.Buffered() >= 5+int(binary.BigEndian.Uint32(hdr[1:]))
}

// frame is one frame read.
type frame struct {
	typ     byte
	payload []byte
}

// next returns the next call: one read while a host reply was awaited,
// or the next frame on the pipe.
func (c *childServer) next(spin *callSpin) (byte, []byte, error) {
	if len(c.queued) > 0 {
		f := c.queued[0]
		c.queued = c.queued[1:]
		return f.typ, f.payload, nil
	}
	spin.wait(c.in)
	typ, payload, err := childproc.ReadFrame(c.in, func(byte) int { return maxChildFrame })
	spin.arrived()
	return typ, payload, err
}

// ask sends op to the parent and waits for its reply: a call's secret read
// or fetch, which the worker carries out with the call's Host.
func (c *childServer) ask(_ context.Context, op callhost.Op) (callhost.Reply, error) {
	var reply callhost.Reply
	c.sent++
	if err := c.writeJSON(frameHostOp, op); err != nil {
		return reply, err
	}
	for {
		typ, payload, err := childproc.ReadFrame(c.in, func(byte) int { return maxChildFrame })
		switch {
		case err != nil:
			return reply, err
		case (typ == frameCall || typ == frameCallQuiet) && len(c.queued) < maxQueuedCalls:
			c.queued = append(c.queued, frame{typ, payload})
			continue
		case typ != frameHostReply:
			return reply, fmt.Errorf("the parent answered a host request with a %q frame", typ)
		}
		err = json.Unmarshal(payload, &reply)
		return reply, err
	}
}

// load loads the module and hardens the process: the compiled code is read
// from the cache directory and mapped before the seccomp filter forbids
// both. What goes wrong is in the ready frame, but for a refusal to run
// unconfined, returned as an error wrapping childproc.ErrUnconfined, after
// which the child exits with childproc.ExitUnconfined.
func (c *childServer) load(hello childHello, wasm []byte) (childReady, *Module, error) {
	ready := childReady{PID: os.Getpid()}
	fail := func(err error) (childReady, *Module, error) {
		ready.Error = toErrorMsg(err)
		return ready, nil, nil
	}
	cfg := DefaultConfig()
	cfg.CacheDir = hello.CacheDir
	cfg.MaxMemory = max(cfg.MaxMemory, hello.Spec.Memory)
	// The parent ends a call at its time limit; the child's own limit is
	// only a backstop, so that the parent's decides.
	timeout := 2*hello.Spec.Timeout + time.Second
	cfg.MaxTimeout = max(cfg.MaxTimeout, timeout)
	cfg.MaxInput = max(cfg.MaxInput, hello.Spec.MaxInput)
	cfg.MaxOutput = max(cfg.MaxOutput, hello.Spec.MaxOutput)
	cfg.MaxLogLine, cfg.MaxLogLinesPerCall = hello.MaxLogLine, hello.MaxLogLinesPerCall
	cfg.LogLinesPerSecond = 1 << 20 // the parent applies the function's rate
	cfg.Logger = slog.New(slog.DiscardHandler)
	cfg.noCloseOnContextDone = true // the parent kills the process instead
	cfg.checked = true              // by the parent's Load
	ctx := context.Background()
	r, err := NewRuntime(ctx, cfg)
	if err != nil {
		return fail(fmt.Errorf("%w: %v", ErrInvalidSpec, err))
	}
	spec := hello.Spec
	spec.Concurrency = 1
	spec.Timeout = timeout
	m, err := r.Load(ctx, wasm, spec, pipeHost{c})
	if err != nil {
		return fail(err)
	}
	ready.FromDisk = r.Stats().FromDisk > 0
	_, ready.AddressSpace, err = childproc.LimitMemory(childHeap(hello.Spec))
	if err != nil {
		return fail(fmt.Errorf("%w: memory limit: %v", ErrInvalidSpec, err))
	}
	ready.Hardening, err = childproc.Harden(hello.AllowUnconfined)
	switch {
	case errors.Is(err, childproc.ErrUnconfined):
		return ready, nil, err
	case err != nil:
		return fail(fmt.Errorf("%w: %v", ErrInvalidSpec, err))
	}
	return ready, m, nil
}

// pipeHost is a child's Host: it sends each log line to the parent, which
// gives it to the function's Host.
type pipeHost struct{ c *childServer }

func (h pipeHost) Log(_ context.Context, level slog.Level, msg string) {
	// A broken pipe shows at the call's result.
	h.c.sent++
	_ = h.c.writeJSON(frameLog, logMsg{Level: level, Msg: msg})
}
