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

// Host is the worker's side of the taskworker namespace: what a function's
// calls can reach outside the sandbox. The worker passes one per Load,
// scoped to that function (its logger, later its grants). The ctx of each
// method is the ctx given to Module.Call, so call-scoped values (caller,
// request id) reach the Host.
//
// Host functions designed but not provided yet (secrets, outbound fetch, DNS,
// files; docs/ABI.md) are added here as methods, with the grant checks in
// the worker's implementation.
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
	"last_error":  "no taskworker host function can fail yet, so there is no last error to read",
	"secret_get":  "secret host functions are not available yet; pass what the function needs in its arguments",
	"http_fetch":  "outbound HTTP is not available to functions yet; fetch from the caller and pass the result in the arguments",
	"http_body":   "outbound HTTP is not available to functions yet; fetch from the caller and pass the result in the arguments",
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
	return b.NewFunctionBuilder().WithGoFunction(api.GoFunc(func(ctx context.Context, stack []uint64) {
		if inst, _ := ctx.Value(callKey{}).(*instance); inst != nil { // not from a start function
			m.hostLog(ctx, inst, stack)
		}
	}), []api.ValueType{api.ValueTypeI32, api.ValueTypeI64}, nil).Export("log")
}

// providedImports are the taskworker functions hostModule provides.
var providedImports = map[string]bool{"log": true}

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
