package starlarkrun

import (
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"strings"

	"github.com/hivemind/taskworker/internal/callhost"
	"github.com/hivemind/taskworker/internal/childproc"
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
	*childproc.Process
	class class
	ready readyMsg
}

// hostCallLimit bounds a host call frame from a child: a log line,
// JSON-escaped, or a request with its body (base64).
const hostCallLimit = callhost.MaxRequestJSON + 2*callhost.MaxRequestBody

// startProcess starts a child for cl and waits until it is ready. track runs
// the goroutine that waits for the child's exit, or reports false when the
// pool is closed, in which case startProcess cleans up and fails.
func startProcess(ctx context.Context, cfg *Config, cl class, track func(func()) bool) (*process, error) {
	hello, err := json.Marshal(helloMsg{
		Memory:          cl.memory,
		ScriptsCached:   cfg.ScriptsPerChild,
		MaxLogLine:      cfg.MaxLogLine,
		MaxLogLines:     cfg.MaxLogLinesPerCall,
		MaxErrorMessage: 1 * KiB,
		AllowUnconfined: cfg.AllowUnconfined,
	})
	if err != nil {
		return nil, fmt.Errorf("%w: %w", ErrStart, err)
	}
	proc, ready, err := childproc.Start(ctx, childproc.Spec{
		Command: cfg.Command, Hello: hello, StartTimeout: cfg.StartTimeout, Track: track, Class: "starlark",
	})
	switch {
	case errors.Is(err, childproc.ErrClosed), errors.Is(err, childproc.ErrUnconfined):
		return nil, err
	case errors.Is(err, childproc.ErrHandshake):
		return nil, fmt.Errorf("%w: %s did not start as a Starlark child (is %q the argument its main passes to starlarkrun.Main?): %w",
			ErrStart, cfg.Command[0], strings.Join(cfg.Command[1:], " "), err)
	case err != nil:
		return nil, fmt.Errorf("%w: %w", ErrStart, err)
	}
	p := &process{Process: proc, class: cl}
	if err := json.Unmarshal(ready, &p.ready); err != nil {
		p.Kill()
		<-p.Exited()
		return nil, fmt.Errorf("%w: bad ready frame: %w", ErrStart, err)
	}
	return p, nil
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

// serve answers one of the child's requests during a call: the source
// of the script, or a host builtin.
func (p *process) serve(ctx context.Context, c *callFrame, typ byte, payload []byte) error {
	switch typ {
	case frameNeedSource:
		if string(payload) != c.msg.Hash {
			return fmt.Errorf("child asked for the source of another script")
		}
		return childproc.WriteFrame(p.W, frameSource, c.source)
	case frameHostCall:
		c.hostCalls++
		return p.serveHostCall(ctx, c, payload)
	}
	return fmt.Errorf("unexpected %q frame during a call", typ)
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
	return childproc.WriteJSONFrame(p.W, frameHostReply, reply)
}
