package sandbox

import (
	"context"
	"log/slog"
	"sync"
	"time"
	"unicode/utf8"

	"github.com/tetratelabs/wazero"
	"github.com/tetratelabs/wazero/api"
)

// Namespace is the import module name of TaskWorker's host functions
// (docs/ABI.md).
const Namespace = "taskworker"

// Host is the worker's side of the taskworker namespace's log function,
// per function: the worker passes one per Load, scoped to that function.
// The ctx of each method is the ctx given to Module.Call, so call-scoped
// values (caller, request id) reach the Host.
//
// What a call reaches outside (secrets, outbound requests) is the call's,
// not the function's: the host functions take it from the call's ctx
// (callhost.From), where the worker put it.
type Host interface {
	// Log receives one guest log line, already cut to Config.MaxLogLine and
	// rate-limited.
	Log(ctx context.Context, level slog.Level, msg string)
}

// SlogHost is a Host that writes guest log lines to a logger and grants
// nothing else.
type SlogHost struct {
	Logger *slog.Logger // nil: slog.Default()
}

var _ Host = SlogHost{}

// Log implements Host.
func (h SlogHost) Log(ctx context.Context, level slog.Level, msg string) {
	logger := h.Logger
	if logger == nil {
		logger = slog.Default()
	}
	logger.Log(ctx, level, msg)
}

// reservedImports are the taskworker functions that docs/ABI.md designs
// but this host does not provide yet, with what a user can do meanwhile: a
// module that imports one is refused at Load with that message.
var reservedImports = map[string]string{
	"dns_resolve": "DNS host functions are not available yet; resolve from the caller (DNSService) and pass the result in the arguments",
	"file_read":   fileHostFunctions,
	"file_write":  fileHostFunctions,
	"file_stat":   fileHostFunctions,
	"file_list":   fileHostFunctions,
	"file_delete": fileHostFunctions,
}

const fileHostFunctions = "file host functions are not available yet; use the FileService API from the caller"

// hostModule defines the taskworker namespace for one Module.
func (m *Module) hostModule(b wazero.HostModuleBuilder) wazero.HostModuleBuilder {
	i32, i64 := api.ValueTypeI32, api.ValueTypeI64
	for _, f := range []struct {
		name            string
		params, results []api.ValueType
		fn              func(ctx context.Context, inst *instance, stack []uint64)
	}{
		{"log", []api.ValueType{i32, i64}, nil, m.hostLog},
		{"last_error", nil, []api.ValueType{i64}, hostLastError},
		{"secret_get", []api.ValueType{i64}, []api.ValueType{i64}, hostSecretGet},
		{"http_fetch", []api.ValueType{i64, i64}, []api.ValueType{i64}, hostHTTPFetch},
		{"http_body", nil, []api.ValueType{i64}, hostHTTPBody},
	} {
		b = b.NewFunctionBuilder().WithGoFunction(api.GoFunc(func(ctx context.Context, stack []uint64) {
			inst, _ := ctx.Value(callKey{}).(*instance)
			if inst == nil { // from a start function: no call
				if f.name != "log" {
					panic("taskworker." + f.name + " is not available before the function's first call (in a start function)")
				}
				return
			}
			f.fn(ctx, inst, stack)
		}), f.params, f.results).Export(f.name)
	}
	return b
}

// providedImports are the taskworker functions hostModule provides.
var providedImports = map[string]bool{"log": true, "last_error": true, "secret_get": true, "http_fetch": true, "http_body": true}

// hostLog is taskworker.log(level i32, msg i64): msg is an Extism memory
// handle, which the host frees.
func (m *Module) hostLog(ctx context.Context, inst *instance, stack []uint64) {
	level := slog.Level(api.DecodeI32(stack[0]))
	handle := stack[1]
	defer inst.free(ctx, handle)
	call := &inst.call
	if call.logLines >= m.rt.cfg.MaxLogLinesPerCall || !m.logLimit.allow(time.Now()) {
		call.logDropped++
		return
	}
	call.logLines++
	n := inst.length(ctx, handle)
	limit := uint64(m.rt.cfg.MaxLogLine)
	cut := n > limit
	mem, ok := inst.memory.Read(uint32(handle), uint32(min(n, limit)))
	if !ok {
		panic("taskworker.log: the message is outside the kernel's memory")
	}
	msg := string(mem)
	if cut {
		// Do not end on part of a character.
		for i := 0; i < utf8.UTFMax-1 && len(msg) > 0; i++ {
			if r, size := utf8.DecodeLastRuneInString(msg); r != utf8.RuneError || size != 1 {
				break
			}
			msg = msg[:len(msg)-1]
		}
		msg += " [cut]"
	}
	m.host.Log(ctx, level, msg)
}

// tokenBucket limits a rate: rate tokens a second, up to burst saved.
type tokenBucket struct {
	mu     sync.Mutex
	rate   float64
	burst  float64
	tokens float64
	last   time.Time
}

func newTokenBucket(perSecond int) *tokenBucket {
	return &tokenBucket{rate: float64(perSecond), burst: 2 * float64(perSecond), tokens: 2 * float64(perSecond)}
}

func (b *tokenBucket) allow(now time.Time) bool {
	b.mu.Lock()
	defer b.mu.Unlock()
	if !b.last.IsZero() {
		b.tokens = min(b.burst, b.tokens+now.Sub(b.last).Seconds()*b.rate)
	}
	b.last = now
	if b.tokens < 1 {
		return false
	}
	b.tokens--
	return true
}
