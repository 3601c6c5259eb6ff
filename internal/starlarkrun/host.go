package starlarkrun

import (
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"log/slog"

	"github.com/hivemind/taskworker/internal/callhost"
)

// Host is the worker's side of the host builtins: what a call's script can
// reach outside its child process. The worker passes one per call, scoped
// to that function (its logger, later its grants); ctx is the call's.
//
// A script calls a host builtin like any function; the child sends the call
// up the pipe and waits for the answer (docs/RATIONALE.md, Starlark, "Host
// capabilities"). What a call reaches outside (secret, the http module) is
// the call's, not the function's: the parent takes it from the call's ctx
// (callhost.From), where the worker put it. The method set matches
// sandbox.Host, so one implementation can serve both runtimes.
type Host interface {
	// Log receives one line of print() or log(), already cut to
	// Config.MaxLogLine, at most Config.MaxLogLinesPerCall per call.
	Log(ctx context.Context, level slog.Level, msg string)
}

// LogFunc is a Host whose Log is a function and that grants nothing else.
type LogFunc func(ctx context.Context, level slog.Level, msg string)

var _ Host = LogFunc(nil)

// Log implements Host.
func (f LogFunc) Log(ctx context.Context, level slog.Level, msg string) { f(ctx, level, msg) }

// hostCallState is the parent's view of one call's host builtin use.
type hostCallState struct {
	host     Host
	logLines int
	budget   callhost.Budget // secret reads and fetches
}

// hostHandlers serve the host builtins, by name: each decodes its JSON
// arguments, calls the Host and returns the JSON result.
var hostHandlers = map[string]func(ctx context.Context, p *Pool, st *hostCallState, args json.RawMessage) (json.RawMessage, error){
	"log":    hostLog,
	"secret": hostSecret,
	"fetch":  hostFetch,
}

// hostLog is log(level, msg). The child already cut and counted the lines;
// the parent does again, since the child is not trusted to.
func hostLog(ctx context.Context, p *Pool, st *hostCallState, args json.RawMessage) (json.RawMessage, error) {
	var a []string
	if err := json.Unmarshal(args, &a); err != nil || len(a) != 2 {
		return nil, errors.New("log takes a level and a message")
	}
	var level slog.Level
	if err := level.UnmarshalText([]byte(a[0])); err != nil {
		return nil, fmt.Errorf("log: unknown level %q", a[0])
	}
	// One line over the limit is the child's count of dropped lines.
	if st.logLines > p.cfg.MaxLogLinesPerCall {
		return nil, nil
	}
	st.logLines++
	st.host.Log(ctx, level, cutUTF8(a[1], p.cfg.MaxLogLine))
	return nil, nil
}

// slogHost is the Host of calls made without one: lines go to the pool's
// logger.
type slogHost struct {
	logger *slog.Logger
	script string
}

func (h slogHost) Log(ctx context.Context, level slog.Level, msg string) {
	h.logger.Log(ctx, level, msg, "script", h.script)
}
