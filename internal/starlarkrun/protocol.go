package starlarkrun

import (
	"encoding/json"
	"time"

	"github.com/hivemind/taskworker/internal/childproc"
)

// The pipe protocol between a Pool and its children (docs/RATIONALE.md, Starlark,
// "The pipe protocol"). Every message is a frame: one type byte, a 4-byte
// big-endian payload length, the payload. The parent writes to the child's
// stdin and reads its stdout; the child's stderr is only for the Go runtime's
// own crash reports.
//
// A child starts by reading frameHello and answering frameReady. Then each
// call is one frameCall, after which the child sends any number of
// frameNeedSource (answered by frameSource) and frameHostCall (answered by
// frameHostReply), and ends the call with exactly one frameResult or
// frameError. The back-channel is synchronous: the script waits for the
// host's answer, as it would for a function call.
const (
	frameHello      = childproc.FrameHello  // parent: helloMsg
	frameReady      = childproc.FrameReady  // child: readyMsg
	frameCall       = 'C'                   // parent: callMsg
	frameNeedSource = 'N'                   // child: the script's hash, hex; answered by frameSource
	frameSource     = 'S'                   // parent: the script's source bytes
	frameHostCall   = 'h'                   // child: hostCallMsg
	frameHostReply  = 'r'                   // parent: hostReplyMsg
	frameResult     = childproc.FrameResult // child: the result, JSON
	frameError      = childproc.FrameError  // child: errorMsg
)

// maxFrame bounds the frames a child reads from its trusted parent, and so
// the sizes a Config may allow. The parent's bounds on what a child sends
// are tighter, per frame type: see (*process).exchange.
const maxFrame = 256 * MiB

// helloMsg configures a child for its whole life: its memory limit is
// fixed at start, so a Pool keeps children per memory limit.
type helloMsg struct {
	Memory          int64 `json:"memory"`
	ScriptsCached   int   `json:"scripts_cached"`
	MaxLogLine      int   `json:"max_log_line"`
	MaxLogLines     int   `json:"max_log_lines"`
	MaxErrorMessage int   `json:"max_error_message"`
	// AllowUnconfined lets the child run without its seccomp filter when
	// it cannot install it (Config.AllowUnconfined).
	AllowUnconfined bool `json:"allow_unconfined,omitempty"`
}

// readyMsg is the child's report once it is set up and hardened.
type readyMsg struct {
	PID int `json:"pid"`
	// BaselineVSZ is the child's virtual size before the limit was set,
	// and AddressSpace the RLIMIT_AS it set on itself (0: none).
	BaselineVSZ  int64 `json:"baseline_vsz"`
	AddressSpace int64 `json:"address_space"`
	// Hardening says what the child did to itself, for the logs.
	Hardening string `json:"hardening"`
}

// callMsg asks a child to call one function of one script.
type callMsg struct {
	Hash      string          `json:"hash"` // SHA-256 of the source, hex
	Name      string          `json:"name"` // the script's file name, for messages
	Function  string          `json:"function"`
	Args      json.RawMessage `json:"args,omitempty"` // JSON array or object
	MaxOutput int             `json:"max_output"`
	// The call's CPU class (callerLoad): idle from the start, or once it
	// has computed for IdleAfter (0: never).
	IdleNow   bool          `json:"idle_now,omitempty"`
	IdleAfter time.Duration `json:"idle_after,omitempty"`
}

// hostCallMsg is a script's call of a host builtin.
type hostCallMsg struct {
	Name string          `json:"name"`
	Args json.RawMessage `json:"args"` // JSON array
}

// hostReplyMsg is the host's answer to a hostCallMsg.
type hostReplyMsg struct {
	Result json.RawMessage `json:"result,omitempty"`
	Error  string          `json:"error,omitempty"`
}

// errorMsg ends a call that failed in the child.
type errorMsg struct {
	Kind      string `json:"kind"` // one of the errKind constants
	Message   string `json:"message"`
	Line      int    `json:"line,omitempty"`
	Col       int    `json:"col,omitempty"`
	Backtrace string `json:"backtrace,omitempty"`
}

// Kinds of errorMsg: which sentinel the parent reports.
const (
	errKindScript   = "script"   // a Starlark error while running: ErrScript
	errKindCompile  = "compile"  // the script does not compile or load: ErrInvalidScript
	errKindArgs     = "args"     // the arguments do not fit: ErrInvalidArgs
	errKindOutput   = "output"   // the result is over MaxOutput: ErrOutputTooLarge
	errKindMemory   = "memory"   // the memory limit: ErrMemoryLimit
	errKindInternal = "internal" // the interpreter panicked: ErrCrashed
)
