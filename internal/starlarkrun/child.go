package starlarkrun

import (
	"bufio"
	"crypto/sha256"
	"encoding/hex"
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"os"
	"runtime"
	"runtime/metrics"
	"strings"
	"sync/atomic"
	"time"
	"unicode/utf8"

	"go.starlark.net/starlark"

	"github.com/hivemind/taskworker/internal/childproc"
)

// ChildArg is the argument after which the worker binary runs Main: its
// CLI calls Main when its first argument is ChildArg, before anything else,
// and exits with the result. Config.Command is then
// {os.Executable(), ChildArg}.
const ChildArg = "__starlark-child"

// Exit codes of Main; the parent reads them when a child dies.
const (
	exitOK       = 0 // the parent closed stdin
	exitProtocol = 1 // the pipe broke or carried something unexpected
	exitMemory   = 3 // a call went over the memory limit; the heap is not trusted to shrink
	exitSetup    = 4 // limits or hardening could not be set up
	exitInternal = 5 // the interpreter panicked
)

// Main is a child process's entry point: it serves calls from the parent
// Pool over stdin and stdout until stdin closes, and returns the exit code.
// It must run in a process of its own, started by a Pool, before anything
// else in that process uses stdin or stdout.
func Main() int {
	out, err := childproc.Attach(min(2, runtime.NumCPU()))
	if err != nil {
		fmt.Fprintln(os.Stderr, "starlarkrun child:", err)
		return exitSetup
	}
	s := &server{
		in:  bufio.NewReaderSize(os.Stdin, 64*KiB),
		out: bufio.NewWriterSize(out, 64*KiB),
	}
	return s.serve()
}

// server is the child's side of the pipe.
type server struct {
	in    *bufio.Reader
	out   *bufio.Writer
	hello helloMsg
	// broken is the first pipe error; after it the child only exits.
	broken error

	predeclared starlark.StringDict
	scripts     []*loadedScript // most recently used first
	watch       memoryWatch

	call *callState // the call being served
}

// loadedScript is a script whose top level has run, its globals frozen.
type loadedScript struct {
	hash    string
	globals starlark.StringDict
}

// callState is what the child keeps about the call it serves.
type callState struct {
	msg        callMsg
	start      time.Time
	idle       bool // its thread is in the idle CPU class
	logLines   int
	logDropped int
}

func (s *server) serve() int {
	typ, payload, err := childproc.ReadFrame(s.in, fromParentLimit)
	if err != nil || typ != frameHello || json.Unmarshal(payload, &s.hello) != nil || s.hello.Memory <= 0 {
		fmt.Fprintf(os.Stderr, "starlarkrun child: no valid hello from the parent (frame %q, %v)\n", typ, err)
		return exitProtocol
	}
	baseline, addressSpace, err := childproc.LimitMemory(s.hello.Memory)
	if err != nil {
		fmt.Fprintln(os.Stderr, "starlarkrun child: memory limit:", err)
		return exitSetup
	}
	s.watch.start(uint64(s.hello.Memory))
	s.predeclared = starlark.StringDict{
		"log":    starlark.NewBuiltin("log", s.logBuiltin),
		"secret": starlark.NewBuiltin("secret", s.secretBuiltin),
		"http":   s.httpModule(),
	}
	for name, v := range libraryModules {
		s.predeclared[name] = v
	}
	hardening, err := childproc.Harden(s.hello.AllowUnconfined)
	switch {
	case errors.Is(err, childproc.ErrUnconfined):
		return childproc.ExitUnconfined // Harden said why
	case err != nil:
		fmt.Fprintln(os.Stderr, "starlarkrun child: harden:", err)
		return exitSetup
	}
	err = childproc.WriteJSONFrame(s.out, frameReady, readyMsg{
		PID: os.Getpid(), BaselineVSZ: baseline, AddressSpace: addressSpace, Hardening: hardening,
	})
	if err != nil {
		return exitProtocol
	}
	code := make(chan int, 1)
	go s.serveCalls(code)
	return <-code
}

// serveCalls serves calls until the child must exit, and sends its exit
// code. A call that moved its thread to the idle class (idle) leaves the
// goroutine locked to that thread: serveCalls then goes on in a new
// goroutine, on a thread of the normal class, and this one ends, taking
// the idle thread with it (the main thread cannot end; the runtime parks
// it for good).
func (s *server) serveCalls(code chan<- int) {
	for {
		typ, payload, err := childproc.ReadFrame(s.in, fromParentLimit)
		if err == io.EOF {
			code <- exitOK
			return
		}
		var m callMsg
		if err != nil || typ != frameCall || json.Unmarshal(payload, &m) != nil {
			code <- exitProtocol
			return
		}
		c, exit, idle := s.serveCall(m)
		switch {
		case exit:
			code <- c
			return
		case idle:
			go s.serveCalls(code)
			return
		}
	}
}

// fromParentLimit bounds the frames a child reads: the parent is trusted.
func fromParentLimit(byte) int { return maxFrame }

// serveCall serves one call and reports whether the child must exit, and
// whether the call moved this goroutine's thread to the idle class.
func (s *server) serveCall(m callMsg) (code int, exit, idle bool) {
	s.call = &callState{msg: m, start: time.Now()}
	if m.IdleNow {
		s.idleNow()
	}
	defer func() {
		idle = s.call.idle
		s.call = nil
		if r := recover(); r != nil {
			s.sendError(&errorMsg{Kind: errKindInternal, Message: s.cut(fmt.Sprintf("interpreter panic: %v", r))})
			code, exit = exitInternal, true
		}
	}()
	result, e := s.execute(m)
	if n := s.call.logDropped; n > 0 {
		// One line past the limit, which the parent allows for this.
		args, _ := json.Marshal([]string{"warn", fmt.Sprintf("%d more log lines dropped (at most %d per call)", n, s.hello.MaxLogLines)})
		s.hostCall("log", args)
	}
	if e != nil {
		s.sendError(e)
	} else if s.broken == nil {
		if err := childproc.WriteFrame(s.out, frameResult, result); err != nil {
			s.broken = err
		}
	}
	switch {
	case s.broken != nil:
		return exitProtocol, true, false
	case e != nil && e.Kind == errKindMemory:
		return exitMemory, true, false
	}
	s.watch.settle()
	return 0, false, false
}

func (s *server) sendError(e *errorMsg) {
	if s.broken != nil {
		return
	}
	if err := childproc.WriteJSONFrame(s.out, frameError, e); err != nil {
		s.broken = err
	}
}

// execute loads the script if need be and calls the function.
func (s *server) execute(m callMsg) ([]byte, *errorMsg) {
	sc, e := s.script(m)
	if e != nil {
		return nil, e
	}
	fn, ok := sc.globals[m.Function]
	if !ok {
		return nil, &errorMsg{Kind: errKindCompile, Message: fmt.Sprintf("%s has no top-level function %q", m.Name, m.Function)}
	}
	if _, ok := fn.(starlark.Callable); !ok {
		return nil, &errorMsg{Kind: errKindCompile, Message: fmt.Sprintf("%s: %s is a %s, not a function", m.Name, m.Function, fn.Type())}
	}
	args, kwargs, err := decodeArgs(m.Args)
	if err != nil {
		return nil, &errorMsg{Kind: errKindArgs, Message: s.cut(err.Error())}
	}
	thread := s.newThread(m.Name)
	v, err := s.run(thread, func() (starlark.Value, error) { return starlark.Call(thread, fn, args, kwargs) })
	if err != nil {
		return nil, s.evalError(m, err)
	}
	out, err := encodeJSON(v, m.MaxOutput)
	switch {
	case errors.Is(err, errResultTooLarge):
		return nil, &errorMsg{Kind: errKindOutput, Message: fmt.Sprintf("%s returned more than %s of JSON", m.Function, formatBytes(int64(m.MaxOutput)))}
	case err != nil:
		return nil, &errorMsg{Kind: errKindScript, Message: s.cut(fmt.Sprintf("%s returned a value with no JSON form: %v", m.Function, err))}
	}
	return out, nil
}

// script returns the loaded script of m, asking the parent for its source
// when this child has not loaded it yet.
func (s *server) script(m callMsg) (*loadedScript, *errorMsg) {
	for i, sc := range s.scripts {
		if sc.hash == m.Hash {
			copy(s.scripts[1:i+1], s.scripts[:i])
			s.scripts[0] = sc
			return sc, nil
		}
	}
	source, err := s.ask(frameNeedSource, []byte(m.Hash), frameSource)
	if err != nil {
		return nil, &errorMsg{Kind: errKindInternal, Message: err.Error()}
	}
	if sum := sha256.Sum256(source); hex.EncodeToString(sum[:]) != m.Hash {
		s.broken = errors.New("source does not match its hash")
		return nil, &errorMsg{Kind: errKindInternal, Message: s.broken.Error()}
	}
	_, prog, err := compile(m.Name, source)
	if err != nil {
		e := &errorMsg{Kind: errKindCompile, Message: s.cut(err.Error())}
		var se *ScriptError
		if errors.As(err, &se) {
			e.Message, e.Line, e.Col = s.cut(se.Message), se.Line, se.Col
		}
		return nil, e
	}
	thread := s.newThread(m.Name)
	var globals starlark.StringDict
	_, err = s.run(thread, func() (starlark.Value, error) {
		var err error
		globals, err = prog.Init(thread, s.predeclared)
		return starlark.None, err
	})
	if err != nil {
		return nil, s.evalError(m, err)
	}
	globals.Freeze()
	sc := &loadedScript{hash: m.Hash, globals: globals}
	s.scripts = append([]*loadedScript{sc}, s.scripts...)
	if len(s.scripts) > s.hello.ScriptsCached {
		s.scripts[len(s.scripts)-1] = nil
		s.scripts = s.scripts[:len(s.scripts)-1]
	}
	return sc, nil
}

func (s *server) newThread(name string) *starlark.Thread {
	t := &starlark.Thread{
		Name:  name,
		Print: func(_ *starlark.Thread, msg string) { s.log("info", msg) },
		OnMaxSteps: func(t *starlark.Thread) {
			s.watch.check()
			s.idle()
			t.SetMaxExecutionSteps(t.ExecutionSteps() + memoryCheckSteps)
		},
	}
	t.SetMaxExecutionSteps(memoryCheckSteps)
	return t
}

// idle moves the running call's thread to the idle CPU class once the call
// has computed for its IdleAfter. It runs on the call's goroutine, from
// OnMaxSteps: the thread can only move itself (childproc.IdleCPU).
func (s *server) idle() {
	c := s.call
	if c == nil || c.idle || c.msg.IdleAfter <= 0 || time.Since(c.start) < c.msg.IdleAfter {
		return
	}
	s.idleNow()
}

// idleNow moves the running call's thread to the idle CPU class.
func (s *server) idleNow() {
	c := s.call
	c.idle = true
	if err := childproc.IdleCPU(); err != nil {
		fmt.Fprintln(os.Stderr, "starlarkrun child:", err)
	}
}

// run runs f on thread under the memory watch.
func (s *server) run(thread *starlark.Thread, f func() (starlark.Value, error)) (starlark.Value, error) {
	s.watch.watch(thread)
	defer s.watch.watch(nil)
	return f()
}

// evalError describes a failed Starlark evaluation.
func (s *server) evalError(m callMsg, err error) *errorMsg {
	e := &errorMsg{Kind: errKindScript, Message: s.cut(err.Error())}
	var ee *starlark.EvalError
	if !errors.As(err, &ee) {
		return e
	}
	e.Message = s.cut(ee.Msg)
	e.Backtrace = s.cut(ee.Backtrace())
	for i := range len(ee.CallStack) {
		if pos := ee.CallStack.At(i).Pos; pos.Filename() == m.Name {
			e.Line, e.Col = int(pos.Line), int(pos.Col)
			break
		}
	}
	if over := s.watch.over.Load(); over > 0 {
		e.Kind = errKindMemory
		e.Message = fmt.Sprintf("the live heap reached %d MiB, over the limit of %d MiB", over/MiB, s.hello.Memory/MiB)
		return e
	}
	if len(ee.CallStack) == 1 && isBindingError(ee.Msg, m.Function) {
		e.Kind = errKindArgs
	}
	return e
}

// isBindingError reports whether msg is starlark-go's error for arguments
// that do not fit fn's parameters.
func isBindingError(msg, fn string) bool {
	rest, ok := strings.CutPrefix(msg, "function "+fn+" ")
	if !ok {
		return false
	}
	for _, p := range []string{"accepts ", "missing ", "got an unexpected keyword argument ", "got multiple values for parameter "} {
		if strings.HasPrefix(rest, p) {
			return true
		}
	}
	return false
}

// ask sends a frame and reads the parent's answer, which must be of type
// want.
func (s *server) ask(typ byte, payload []byte, want byte) ([]byte, error) {
	if s.broken != nil {
		return nil, s.broken
	}
	if err := childproc.WriteFrame(s.out, typ, payload); err != nil {
		s.broken = err
		return nil, err
	}
	got, answer, err := childproc.ReadFrame(s.in, fromParentLimit)
	if err == nil && got != want {
		err = fmt.Errorf("parent answered a %q frame with %q", typ, got)
	}
	if err != nil {
		s.broken = err
		return nil, err
	}
	return answer, nil
}

// hostCall calls a host builtin in the parent and returns its JSON result.
func (s *server) hostCall(name string, args []byte) (json.RawMessage, error) {
	payload, err := json.Marshal(hostCallMsg{Name: name, Args: args})
	if err != nil {
		return nil, err
	}
	answer, err := s.ask(frameHostCall, payload, frameHostReply)
	if err != nil {
		return nil, fmt.Errorf("%s: host unreachable: %w", name, err)
	}
	var r hostReplyMsg
	if err := json.Unmarshal(answer, &r); err != nil {
		s.broken = err
		return nil, err
	}
	if r.Error != "" {
		return nil, fmt.Errorf("%s: %s", name, r.Error)
	}
	return r.Result, nil
}

// logLevels are the levels log() takes, as the host's log receives them.
var logLevels = []string{"debug", "info", "warn", "error"}

// logBuiltin is log(*args, level="info"): like print, to the host's log.
func (s *server) logBuiltin(_ *starlark.Thread, b *starlark.Builtin, args starlark.Tuple, kwargs []starlark.Tuple) (starlark.Value, error) {
	level := "info"
	for _, kv := range kwargs {
		l, ok := kv[1].(starlark.String)
		if string(kv[0].(starlark.String)) != "level" || !ok || !isLogLevel(string(l)) {
			return nil, fmt.Errorf("%s: takes only level=, one of %s", b.Name(), strings.Join(logLevels, ", "))
		}
		level = string(l)
	}
	var msg strings.Builder
	for i, a := range args {
		if i > 0 {
			msg.WriteByte(' ')
		}
		if str, ok := a.(starlark.String); ok {
			msg.WriteString(string(str))
		} else {
			msg.WriteString(a.String())
		}
		if msg.Len() > s.hello.MaxLogLine {
			break
		}
	}
	if err := s.log(level, msg.String()); err != nil {
		return nil, err
	}
	return starlark.None, nil
}

func isLogLevel(l string) bool {
	for _, v := range logLevels {
		if v == l {
			return true
		}
	}
	return false
}

// log sends one line to the host's log, cut to MaxLogLine, or counts it as
// dropped past MaxLogLines lines in this call.
func (s *server) log(level, msg string) error {
	c := s.call
	if c == nil {
		return nil
	}
	if c.logLines >= s.hello.MaxLogLines {
		c.logDropped++
		return nil
	}
	c.logLines++
	args, err := json.Marshal([]string{level, cutUTF8(msg, s.hello.MaxLogLine)})
	if err != nil {
		return err
	}
	_, err = s.hostCall("log", args)
	return err
}

// cut shortens an error message to MaxErrorMessage bytes.
func (s *server) cut(msg string) string {
	return cutUTF8(msg, s.hello.MaxErrorMessage)
}

// cutUTF8 cuts s to at most n bytes without splitting a character, and
// marks the cut.
func cutUTF8(s string, n int) string {
	if len(s) <= n {
		return s
	}
	const mark = " [cut]"
	end := max(n-len(mark), 0)
	for end > 0 && !utf8.RuneStart(s[end]) {
		end--
	}
	return s[:end] + mark
}

// memoryWatch stops a script whose live heap outgrows the limit. The
// garbage collector, pushed by the soft limit, runs as the heap grows; after
// each cycle the watch reads the live heap and, when it is over, cancels
// the running thread, which fails at its next step with its position.
type memoryWatch struct {
	limit   uint64
	watched atomic.Pointer[watchedThread]
	over    atomic.Uint64 // the live heap that was over the limit, or 0
}

// watchedThread is a thread and the count of collections completed when it
// started: a cycle that completed before cannot have measured its heap.
// One in progress when it started may have measured the previous call's,
// which is why settle collects after a call that left a large heap.
type watchedThread struct {
	thread *starlark.Thread
	cycles uint64
}

// gcSentinel is an object whose cleanup runs after a garbage collection.
// It holds a pointer and is 16 bytes, so it is not batched by the tiny
// allocator (whose objects' cleanups may never run).
type gcSentinel struct {
	_ *int
	_ uint64
}

func (w *memoryWatch) start(limit uint64) {
	w.limit = limit
	w.arm()
}

// watch makes thread the one the watch cancels; nil stops watching, and
// leaves over as it was for the error report.
func (w *memoryWatch) watch(thread *starlark.Thread) {
	if thread == nil {
		w.watched.Store(nil)
		return
	}
	w.over.Store(0)
	cycles, _ := gcStats()
	w.watched.Store(&watchedThread{thread: thread, cycles: cycles})
}

func (w *memoryWatch) arm() {
	runtime.AddCleanup(new(gcSentinel), (*memoryWatch).afterGC, w)
}

func (w *memoryWatch) afterGC() {
	w.check()
	w.arm()
}

// check cancels the watched thread if the last collection found more live
// heap than the limit. It runs after each collection and, from the
// thread's own OnMaxSteps, every memoryCheckSteps steps: a cleanup armed
// while a collection is running fires only after the next one, which a
// script that stopped allocating never triggers.
func (w *memoryWatch) check() {
	cycles, live := gcStats()
	if wt := w.watched.Load(); wt != nil && live > w.limit && cycles > wt.cycles {
		w.over.Store(live)
		wt.thread.Cancel("memory limit exceeded")
	}
}

// memoryCheckSteps is how often, in Starlark steps (a few milliseconds),
// a running thread checks the memory watch.
const memoryCheckSteps = 1 << 18

// settle runs a full collection if the last call left more than half the
// limit in heap objects, live or garbage, so that the next call is not
// measured, and stopped, for its predecessor's data.
func (w *memoryWatch) settle() {
	sample := []metrics.Sample{{Name: "/memory/classes/heap/objects:bytes"}}
	metrics.Read(sample)
	if sample[0].Value.Uint64() > w.limit/2 {
		runtime.GC()
	}
}

// gcStats returns the number of completed collections and the live heap
// the last one marked.
func gcStats() (cycles, live uint64) {
	sample := []metrics.Sample{{Name: "/gc/cycles/total:gc-cycles"}, {Name: "/gc/heap/live:bytes"}}
	metrics.Read(sample)
	return sample[0].Value.Uint64(), sample[1].Value.Uint64()
}
