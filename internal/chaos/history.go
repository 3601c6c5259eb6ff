package chaos

import (
	"math"
	"strconv"
	"strings"
	"sync"
	"time"

	"github.com/anishathalye/porcupine"
)

// history records operations as clients run them: call and return times on
// one monotonic clock, and what each call returned.
type history struct {
	start time.Time
	mu    sync.Mutex
	ops   []porcupine.Operation
}

func newHistory() *history { return &history{start: time.Now()} }

// now is the time since the history began, in nanoseconds, on the
// monotonic clock.
func (h *history) now() int64 { return int64(time.Since(h.start)) }

func (h *history) add(client int, in Input, call int64, out Output, ret int64) {
	h.mu.Lock()
	defer h.mu.Unlock()
	h.ops = append(h.ops, porcupine.Operation{ClientId: client, Input: in, Call: call, Output: out, Return: ret})
}

func (h *history) operations() []porcupine.Operation {
	h.mu.Lock()
	defer h.mu.Unlock()
	return append([]porcupine.Operation(nil), h.ops...)
}

// never is the return time of an ambiguous write: it may take effect at any
// time after its call, so it is concurrent with everything after it.
const never = math.MaxInt64 / 2

// resolve prepares a recorded history for the checker, the way etcd's
// robustness tests do, so that faults that leave many calls ambiguous do not
// make the check exponential:
//
//   - failed reads say nothing, and writes that failed definitely
//     (Failed) did nothing: both are dropped;
//   - an ambiguous Revise whose content some successful read later saw did
//     take effect: it becomes a success at the version seen, returning no
//     later than the first read that saw it;
//   - an ambiguous conditional Revise expecting version v did not take
//     effect if a read saw other content at version v+1, the only version
//     it could have made;
//   - an ambiguous write to a file that still exists at the end and whose
//     content the final FileHistory (complete: versions are only ever
//     removed with the whole file) does not hold did not take effect, and is
//     dropped;
//   - an ambiguous write to a file whose Delete was acknowledged, or that
//     some call found gone, can only have taken effect before that call
//     returned (file ids are never reused): it returns then, or is dropped
//     if it was called after;
//   - any other ambiguous write keeps an unknown effect and never returns.
//
// existing holds the files that exist at the end, whose final FileHistory
// is in ops. Ambiguous Pushes have no file id and are dropped: they are
// checked against the files found at the end instead (see Run).
func resolve(ops []porcupine.Operation, existing map[string]bool) []porcupine.Operation {
	type seen struct {
		version int64
		ret     int64
	}
	observed := map[string]seen{} // content SHA -> earliest read that saw it
	type fileVersion struct {
		file    string
		version int64
	}
	content := map[fileVersion]string{} // what some read saw at a version
	see := func(file, sha string, version, ret int64) {
		if s, ok := observed[sha]; !ok || ret < s.ret {
			observed[sha] = seen{version, ret}
		}
		content[fileVersion{file, version}] = sha
	}
	// deleted: file -> the earliest return of an acknowledged Delete or of
	// any call that found the file gone. Files are known only from
	// acknowledged Pushes, so a file found gone had been deleted by then.
	deleted := map[string]int64{}
	for _, op := range ops {
		in, out := op.Input.(Input), op.Output.(Output)
		if in.File != "" && (out.Result == NotFound || (out.Result == OK && in.Op == OpDelete)) {
			if r, ok := deleted[in.File]; !ok || op.Return < r {
				deleted[in.File] = op.Return
			}
		}
		if out.Result != OK {
			continue
		}
		switch in.Op {
		case OpGet:
			see(in.File, out.SHA, out.Version, op.Return)
		case OpHistory:
			for _, e := range splitHistory(out.History) {
				see(in.File, e.sha, e.version, op.Return)
			}
		}
	}
	var out []porcupine.Operation
	for _, op := range ops {
		in, o := op.Input.(Input), op.Output.(Output)
		if o.Result == Failed {
			continue
		}
		if o.Result != Ambiguous {
			out = append(out, op)
			continue
		}
		switch in.Op {
		case OpGet, OpHistory, OpPush:
			continue
		case OpRevise:
			if s, ok := observed[in.SHA]; ok {
				op.Output = Output{Result: OK, Version: s.version}
				op.Return = max(s.ret, op.Call)
				out = append(out, op)
				continue
			}
			if sha, ok := content[fileVersion{in.File, in.Expected + 1}]; in.Expected != 0 && ok && sha != in.SHA {
				continue // the one version it could have made holds other content
			}
		}
		if existing[in.File] {
			continue // the final state shows it did not take effect
		}
		op.Return = never
		if d, ok := deleted[in.File]; ok {
			if op.Call > d {
				continue // the file was gone before the call
			}
			op.Return = d
		}
		out = append(out, op)
	}
	return out
}

type historyEntry struct {
	version int64
	sha     string
}

// splitHistory parses Output.History.
func splitHistory(h string) []historyEntry {
	var out []historyEntry
	for _, e := range strings.Fields(h) {
		v, sha, _ := strings.Cut(e, ":")
		n, err := strconv.ParseInt(v, 10, 64)
		if err == nil {
			out = append(out, historyEntry{version: n, sha: sha})
		}
	}
	return out
}
