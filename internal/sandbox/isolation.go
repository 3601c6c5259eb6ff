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

	"github.com/hivemind/taskworker/internal/callhost"
	"github.com/hivemind/taskworker/internal/childproc"
)

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
		AllowUnconfined: cfg.AllowUnconfined,
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
		Command: cfg.ChildCommand, Hello: hello, StartTimeout: timeout, Track: m.sup.Track, Class: "wasm", Poll: true,
	})
	switch {
	case errors.Is(err, childproc.ErrClosed), errors.Is(err, childproc.ErrUnconfined):
		return nil, err
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
	if err := c.start(ctx); err != nil {
		c.kill()
		return nil, err
	}
	m.rt.layers.Do(func() { childproc.LogLayers(m.rt.logger, "WebAssembly", proc, c.ready.Hardening) })
	if c.ready.FromDisk {
		m.fromDisk.Add(1)
	}
	return c, nil
}

// Kill ends the child at once.
func (c *child) Kill() { c.proc.Kill() }

// kill ends the child and waits for it.
func (c *child) kill() {
	c.proc.Kill()
	<-c.proc.Exited()
}

// start has the child run its guest's start-up (instance.start) now that
// it is confined, as an exchange under the function's time limit: one that
// overstays ends with the process, as a call would. What it asks of the
// outside is refused here too, whatever the child says.
func (c *child) start(ctx context.Context) error {
	cc, x := c.newCall(ctx, nil, false)
	defer cc.cancel()
	x.Frame, cc.host = frameStart, startupHost{}
	_, _, err := cc.finish(c.proc.Call(ctx, x))
	if ce := (*childproc.CallError)(nil); errors.As(err, &ce) {
		// Killed (its time limit) or dead: the child could not say when.
		return fmt.Errorf("the function's start-up (before its first call): %w", err)
	}
	return err
}

// run sends one call to the child and waits for its answer, killing the
// child when the call's time is up.
func (c *child) run(ctx context.Context, input []byte) ([]byte, bool, error) {
	// While no other call is in the worker's sandbox, running or waiting,
	// both sides spin for the other's next frame (callSpin): with others,
	// the CPU a spin burns is theirs.
	quiet := c.m.rt.calls.Load() <= 1
	cc, x := c.newCall(ctx, input, quiet)
	defer cc.cancel()
	return cc.finish(c.proc.Call(ctx, x))
}

// childCall is the parent's side of one call on a child: what it serves
// the child during the call (log lines, secret reads, fetches), and how it
// reads the child's answer.
type childCall struct {
	c              *child
	ctx            context.Context
	host           callhost.Host // the call's (callhost.From(ctx))
	lines, dropped int
	budget         callhost.Budget
	// The call's host requests run under hostCtx, which ends at deadline
	// (its time limit from when it was prepared): made at the first
	// request, as most calls make none (hostContext).
	deadline time.Time
	hostCtx  context.Context
	stop     context.CancelFunc
}

// hostContext is the context of the call's host requests.
func (cc *childCall) hostContext() context.Context {
	if cc.hostCtx == nil {
		cc.hostCtx, cc.stop = context.WithDeadline(cc.ctx, cc.deadline)
	}
	return cc.hostCtx
}

// cancel ends the call's host requests, once the call has ended.
func (cc *childCall) cancel() {
	if cc.stop != nil {
		cc.stop()
	}
}

// newCall prepares a call of input on c for the caller's ctx: its
// exchange with the child. quiet says no other call of the function runs
// (callSpin). The caller calls cc.cancel once the call has ended.
func (c *child) newCall(ctx context.Context, input []byte, quiet bool) (cc *childCall, x childproc.Exchange) {
	m := c.m
	x = childproc.Exchange{
		Frame: frameCall, Payload: input,
		Limits: m.spec.Limits,
		Limit: func(typ byte) int {
			switch typ {
			case frameLog:
				return 8*m.rt.cfg.MaxLogLine + 64 // JSON-escaped
			case frameHostOp:
				return maxHostOpFrame
			}
			return 0
		},
		ExitMemory: -1,
	}
	if quiet {
		x.Frame, x.Spin = frameCallQuiet, replySpin
	}
	// The call's secret reads and fetches: under its time limit, and
	// counted here again, as the child is not trusted to have.
	cc = &childCall{c: c, ctx: ctx, host: callhost.From(ctx), deadline: time.Now().Add(m.spec.Timeout)}
	x.Serve = cc.serve
	return cc, x
}

// serve handles a frame the child sends during the call.
func (cc *childCall) serve(typ byte, payload []byte) error {
	c, m := cc.c, cc.c.m
	if typ == frameHostOp {
		var op callhost.Op
		if err := json.Unmarshal(payload, &op); err != nil {
			return fmt.Errorf("bad host request frame: %w", err)
		}
		return childproc.WriteJSONFrame(c.proc.W, frameHostReply, callhost.Serve(cc.hostContext(), cc.host, &cc.budget, op))
	}
	if typ != frameLog {
		return fmt.Errorf("unexpected %q frame during a call", typ)
	}
	var l logMsg
	if err := json.Unmarshal(payload, &l); err != nil {
		return fmt.Errorf("bad log frame: %w", err)
	}
	// The child cut and counted its lines already; a child is not
	// trusted to have done so.
	cc.lines++
	if cc.lines > m.rt.cfg.MaxLogLinesPerCall || !m.logLimit.allow(time.Now()) {
		cc.dropped++
		return nil
	}
	if len(l.Msg) > m.rt.cfg.MaxLogLine {
		l.Msg = strings.ToValidUTF8(l.Msg[:m.rt.cfg.MaxLogLine], "") + " [cut]"
	}
	m.host.Log(cc.ctx, min(max(l.Level, slog.LevelDebug), slog.LevelError), l.Msg)
	return nil
}

// finish turns the child's answer (Process.Call's results) into the call's.
func (cc *childCall) finish(out, errFrame []byte, keep bool, err error) ([]byte, bool, error) {
	c, m, ctx := cc.c, cc.c.m, cc.ctx
	if cc.dropped > 0 {
		m.rt.logger.WarnContext(ctx, "sandbox: dropped guest log lines over the limit", "export", m.spec.Export, "dropped", cc.dropped)
	}
	switch {
	case err == nil && errFrame == nil:
		return out, keep, nil
	case err == nil:
		var e errorMsg
		if err := json.Unmarshal(errFrame, &e); err != nil || !callErrorKinds[e.Kind] {
			// A child that sends what a call cannot end with is not
			// trusted further.
			c.kill()
			return nil, false, fmt.Errorf("%w: the function's process sent an error frame of kind %q during a call", ErrTrap, e.Kind)
		}
		// When the child threw its instance away (a trap, a memory
		// overrun), the process stays: it makes a new instance from the
		// code it compiled, in a few milliseconds rather than a process
		// start. A trap and a refused grow are wazero's checks doing their
		// work, inside the instance; only a timeout (a guest still running)
		// or a death ends the process (docs/RATIONALE.md, "Why does a
		// child outlive a trap?").
		if e.Discarded {
			m.remade.Add(1)
		}
		return nil, true, e.err()
	}
	if m.closing() {
		return nil, false, fmt.Errorf("%w: the function was stopped by Close: it was undeployed or the worker is stopping", ErrClosed)
	}
	ce := err.(*childproc.CallError)
	if ce.Sentinel != nil || ce.NotSent() {
		return nil, false, ce
	}
	m.rt.logger.WarnContext(ctx, "sandbox: a function's process died during a call", "export", m.spec.Export,
		"pid", c.ready.PID, "exit", c.proc.ExitSummary(), "error", ce.Err, "stderr", c.proc.Stderr())
	return nil, false, fmt.Errorf("%w: %w", ErrTrap, ce)
}

// maxHostOpFrame bounds a host request frame from a child: a request's
// description and body, base64 in JSON.
const maxHostOpFrame = callhost.MaxRequestJSON + 2*callhost.MaxRequestBody

// replySpin is how long a call polls for its child's answer before it
// blocks in a read, when no other call of the function runs (callSpin).
const replySpin = 100 * time.Microsecond

// callErrorKinds are the errors a call in a child can end with; a child
// that sends another kind is not trusted further.
var callErrorKinds = map[string]bool{
	"guest": true, "input": true, "output": true, "timeout": true, "memory": true, "trap": true, "canceled": true,
}
