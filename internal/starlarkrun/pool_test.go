package starlarkrun

import (
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"log/slog"
	"strings"
	"sync"
	"syscall"
	"testing"
	"time"
)

func TestCalls(t *testing.T) {
	p := newPool(t, testConfig(t))
	const echo = "def echo(x):\n    return x\n"
	for _, tc := range []struct {
		name, src, fn, args, want string
	}{
		{"add", addScript, "add", "[1, 2]", "3"},
		{"keyword arguments", addScript, "add", `{"b": 2, "a": 1}`, "3"},
		{"strings", addScript, "add", `["tas", "kworker"]`, `"taskworker"`},
		{"dict and list round trip", echo, "echo", `[{"a": [1, 2.5, "s", null, true, false, {"b": []}], "z": {}}]`,
			`{"a":[1,2.5,"s",null,true,false,{"b":[]}],"z":{}}`},
		{"object keys keep their order", echo, "echo", `[{"z": 1, "a": 2, "m": 3}]`, `{"z":1,"a":2,"m":3}`},
		{"big ints", addScript, "add", "[123456789012345678901234567890, 1]", "123456789012345678901234567891"},
		{"negative and float", addScript, "add", "[-1, 0.5]", "-0.5"},
		{"a float stays a float", echo, "echo", "[2.0]", "2.0"},
		{"unicode and escapes", echo, "echo", `["h\u00e9\u4e16\n\"\\\u0001"]`, `"hé世\n\"\\\u0001"`},
		{"tuple becomes array", "def f():\n    return (1, [2, (3,)])\n", "f", "", "[1,[2,[3]]]"},
		{"None", "def f():\n    pass\n", "f", "null", "null"},
		{"no arguments, as blanks", "def f():\n    return 1\n", "f", " \n ", "1"},
		{"defaults", "def f(a, b=10):\n    return a * b\n", "f", "[4]", "40"},
		{"varargs and kwargs", "def f(*args, **kw):\n    return [len(args), sorted(kw.keys())]\n", "f", `{"x": 1, "y": 2}`, `[0,["x","y"]]`},
		{"json module", "def f(x):\n    return json.decode(json.encode(x))\n", "f", `[{"k": [1]}]`, `{"k":[1]}`},
		{"math module", "def f(x):\n    return math.floor(math.sqrt(x))\n", "f", "[17]", "4"},
		{"while and top-level for", "n = 0\nfor i in range(3):\n    n += i\ndef f():\n    i = 0\n    while i < n:\n        i += 1\n    return i\n", "f", "", "3"},
		{"sets inside, list outside", "def f(x):\n    return sorted(set(x))\n", "f", "[[3, 1, 3, 2]]", "[1,2,3]"},
		{"lambda assigned at top level", "double = lambda x: 2 * x\n", "double", "[21]", "42"},
	} {
		t.Run(tc.name, func(t *testing.T) {
			mustCall(t, p, tc.src, tc.fn, tc.args, tc.want)
		})
	}
}

func TestScriptErrors(t *testing.T) {
	p := newPool(t, testConfig(t))
	for _, tc := range []struct {
		name, src, fn, args string
		want                error
		line                int    // of the *ScriptError, when not 0
		msg                 string // in the error's text
	}{
		{"runtime error reports its line", "def f(a):\n    b = a\n    return b // 0\n", "f", "[1]", ErrScript, 3, "test.star:3:14: floored division by zero"},
		{"line inside a nested call", "def g(x):\n    return x.nope\n\ndef f():\n    return g(1)\n", "f", "", ErrScript, 2, "int has no .nope field or method"},
		{"fail()", "def f():\n    fail(\"boom\", 42)\n", "f", "", ErrScript, 2, "boom 42"},
		{"top-level error", "x = {}[1]\ndef f():\n    return 1\n", "f", "", ErrScript, 1, "key 1 not in dict"},
		{"frozen globals", "L = []\ndef f():\n    L.append(1)\n", "f", "", ErrScript, 3, "frozen list"},
		{"recursion is refused", "def f(n):\n    return f(n - 1) if n else 0\n", "f", "[10]", ErrScript, 2, "called recursively"},
		{"result with no JSON form", "def f():\n    return {\"a\": [1, set([1])]}\n", "f", "", ErrScript, 0, `result["a"][1]: a set has no JSON form`},
		{"dict with int keys", "def f():\n    return {1: 2}\n", "f", "", ErrScript, 0, "dict key 1 is a int; JSON object keys are strings"},
		{"NaN", "def f():\n    return float(\"nan\")\n", "f", "", ErrScript, 0, "nan has no JSON form"},
		{"a value that contains itself", "def f():\n    x = []\n    x.append(x)\n    return x\n", "f", "", ErrScript, 0, "nested more than 1000 levels"},
		{"syntax error", "def f(:\n    pass\n", "f", "", ErrInvalidScript, 1, "test.star:1:8: got ':', want ')'"},
		{"undefined name", "def f():\n    return open(\"/etc/passwd\")\n", "f", "", ErrInvalidScript, 2, "undefined: open"},
		{"load", "load(\"other.star\", \"x\")\ndef f():\n    return x\n", "f", "", ErrInvalidScript, 1, "load() is not supported"},
		{"missing function", addScript, "sub", "[1, 2]", ErrInvalidScript, 0, `no top-level function "sub"`},
		{"not a function", "sub = 1\n", "sub", "", ErrInvalidScript, 0, "sub is a int, not a function"},
		{"too few arguments", addScript, "add", "[1]", ErrInvalidArgs, 0, "function add missing 1 argument (b)"},
		{"too many arguments", addScript, "add", "[1, 2, 3]", ErrInvalidArgs, 0, "function add accepts 2 positional arguments (3 given)"},
		{"unknown keyword", addScript, "add", `{"a": 1, "c": 2}`, ErrInvalidArgs, 0, `unexpected keyword argument "c"`},
		{"arguments not JSON", addScript, "add", "[1, ", ErrInvalidArgs, 0, "not valid JSON"},
		{"arguments neither array nor object", addScript, "add", `"12"`, ErrInvalidArgs, 0, "must be a JSON array"},
		{"wrong log level", "def f():\n    log(\"x\", level=\"loud\")\n", "f", "", ErrScript, 2, "level="},
	} {
		t.Run(tc.name, func(t *testing.T) {
			_, err := call(t, p, tc.src, tc.fn, tc.args)
			if !errors.Is(err, tc.want) {
				t.Fatalf("got %v, want %v", err, tc.want)
			}
			if !strings.Contains(err.Error(), tc.msg) {
				t.Errorf("error %q does not contain %q", err, tc.msg)
			}
			var se *ScriptError
			if tc.line != 0 && (!errors.As(err, &se) || se.Line != tc.line) {
				t.Errorf("error %q: want a *ScriptError at line %d, got %+v", err, tc.line, se)
			}
		})
	}
	// After all that, the first child still serves: none of these kill it.
	if s := p.Stats(); s.Discarded != 0 {
		t.Errorf("script errors discarded %d children", s.Discarded)
	}
	mustCall(t, p, addScript, "add", "[1, 2]", "3")
}

func TestRequestErrors(t *testing.T) {
	cfg := testConfig(t)
	cfg.MaxSource = 1 * KiB
	p := newPool(t, cfg)
	for _, tc := range []struct {
		name string
		req  Request
		want error
		msg  string
	}{
		{"input too large", Request{Source: []byte(addScript), Function: "add", Args: json.RawMessage("[\"" + strings.Repeat("x", 2*MiB) + "\"]")},
			ErrInputTooLarge, "over the function's limit of 1 MiB"},
		{"memory over the maximum", Request{Source: []byte(addScript), Function: "add", Limits: Limits{Memory: 2 * GiB}},
			ErrInvalidLimits, "between 16 MiB and 1 GiB (the operator's MaxMemory)"},
		{"timeout over the maximum", Request{Source: []byte(addScript), Function: "add", Limits: Limits{Timeout: time.Hour}},
			ErrInvalidLimits, "the operator's MaxTimeout"},
		{"script too large", Request{Source: []byte(strings.Repeat("#", 2*KiB)), Function: "add"},
			ErrInvalidScript, "over the operator's maximum of 1 KiB"},
		{"no function", Request{Source: []byte(addScript)}, ErrInvalidScript, "no function named"},
	} {
		t.Run(tc.name, func(t *testing.T) {
			_, err := p.Call(context.Background(), tc.req)
			if !errors.Is(err, tc.want) || !strings.Contains(err.Error(), tc.msg) {
				t.Fatalf("got %v, want %v containing %q", err, tc.want, tc.msg)
			}
		})
	}
}

func TestLog(t *testing.T) {
	cfg := testConfig(t)
	cfg.MaxLogLine = 64
	cfg.MaxLogLinesPerCall = 3
	p := newPool(t, cfg)
	src := `
def f(n):
    print("hello", 1, [2])
    log("warned", level="warn")
    log("0123456789" * 7)
    for i in range(n):
        print(i)
    return n
`
	var lines logLines
	out, err := p.Call(context.Background(), Request{Source: []byte(src), Function: "f", Args: json.RawMessage("[5]"), Host: &lines})
	if err != nil || string(out) != "5" {
		t.Fatalf("got %s, %v", out, err)
	}
	want := []string{"INFO hello 1 [2]", "WARN warned", "INFO " + strings.Repeat("0123456789", 5) + "01234567 [cut]", "WARN 5 more log lines dropped (at most 3 per call)"}
	if got := lines.get(); fmt.Sprint(got) != fmt.Sprint(want) {
		t.Errorf("log lines:\n got %q\nwant %q", got, want)
	}
}

func TestConcurrentCalls(t *testing.T) {
	cfg := testConfig(t)
	cfg.MaxChildren = 3
	p := newPool(t, cfg)
	scripts := []string{addScript, "def add(a, b):\n    return a + b + 0\n", "def add(a, b):\n    return b + a\n"}
	var wg sync.WaitGroup
	errs := make(chan error, 60)
	for i := range 60 {
		wg.Go(func() {
			req := Request{
				Source: []byte(scripts[i%len(scripts)]), Function: "add",
				Args:   json.RawMessage(fmt.Sprintf("[%d, %d]", i, 1000)),
				Tenant: fmt.Sprint("tenant", i%2),
			}
			out, err := p.Call(context.Background(), req)
			if err == nil && string(out) != fmt.Sprint(i+1000) {
				err = fmt.Errorf("call %d = %s", i, out)
			}
			if err != nil {
				errs <- err
			}
		})
	}
	wg.Wait()
	close(errs)
	for err := range errs {
		t.Error(err)
	}
	if s := p.Stats(); s.Alive > cfg.MaxChildren || s.Discarded != 0 {
		t.Errorf("stats %+v: want at most %d alive, none discarded", s, cfg.MaxChildren)
	}
}

func TestTenantsDoNotShareChildren(t *testing.T) {
	p := newPool(t, testConfig(t))
	before := p.Stats().Started
	for _, tenant := range []string{"alice", "bob", "alice", "bob"} {
		if _, err := p.Call(context.Background(), Request{Source: []byte(addScript), Function: "add", Args: json.RawMessage("[1, 2]"), Tenant: tenant}); err != nil {
			t.Fatal(err)
		}
	}
	if started := p.Stats().Started - before; started != 2 {
		t.Errorf("started %d children for two tenants, want 2", started)
	}
}

func TestBusy(t *testing.T) {
	cfg := testConfig(t)
	cfg.MaxChildren = 1
	p := newPool(t, cfg)
	done := make(chan error)
	go func() {
		_, err := p.Call(context.Background(), Request{Source: []byte(loopForever), Function: "f", Limits: Limits{Timeout: 2 * time.Second}})
		done <- err
	}()
	waitBusy(t, p)
	ctx, cancel := context.WithTimeout(context.Background(), 100*time.Millisecond)
	defer cancel()
	_, err := p.Call(ctx, Request{Source: []byte(addScript), Function: "add", Args: json.RawMessage("[1, 2]")})
	if !errors.Is(err, ErrBusy) {
		t.Errorf("got %v, want ErrBusy", err)
	}
	if err := <-done; !errors.Is(err, ErrTimeout) {
		t.Errorf("long call: got %v, want ErrTimeout", err)
	}
	mustCall(t, p, addScript, "add", "[1, 2]", "3")
}

const loopForever = "def f():\n    while True:\n        pass\n"

func TestCancelAndCallerDeadline(t *testing.T) {
	p := newPool(t, testConfig(t))
	ctx, cancel := context.WithCancel(context.Background())
	time.AfterFunc(200*time.Millisecond, cancel)
	_, err := p.Call(ctx, Request{Source: []byte(loopForever), Function: "f"})
	if !errors.Is(err, ErrCanceled) {
		t.Errorf("canceled: got %v, want ErrCanceled", err)
	}
	// The killed child's replacement, so that the deadline below does not
	// also bound a process start.
	for p.Stats().Idle == 0 {
		time.Sleep(time.Millisecond)
	}
	ctx, cancel = context.WithTimeout(context.Background(), 200*time.Millisecond)
	defer cancel()
	_, err = p.Call(ctx, Request{Source: []byte(loopForever), Function: "f"})
	if !errors.Is(err, ErrTimeout) || !strings.Contains(err.Error(), "caller's deadline") {
		t.Errorf("caller's deadline: got %v, want ErrTimeout about the caller's deadline", err)
	}
	mustCall(t, p, addScript, "add", "[1, 2]", "3")
}

// TestChildKilledMidCall kills a child from outside while it runs a call:
// that call fails, and the next one is served by a replacement.
func TestChildKilledMidCall(t *testing.T) {
	cfg := testConfig(t)
	cfg.MaxChildren = 2
	p := newPool(t, cfg)
	done := make(chan error)
	go func() {
		_, err := p.Call(context.Background(), Request{Source: []byte(loopForever), Function: "f", Limits: Limits{Timeout: time.Minute}})
		done <- err
	}()
	proc := waitBusy(t, p)
	if err := syscall.Kill(proc.ready.PID, syscall.SIGKILL); err != nil {
		t.Fatal(err)
	}
	select {
	case err := <-done:
		if !errors.Is(err, ErrCrashed) || !strings.Contains(err.Error(), "killed") {
			t.Errorf("got %v, want ErrCrashed saying the process was killed", err)
		}
	case <-time.After(30 * time.Second):
		t.Fatal("the call did not end after its child was killed")
	}
	mustCall(t, p, addScript, "add", "[1, 2]", "3")
	if s := p.Stats(); s.Discarded != 1 {
		t.Errorf("stats %+v: want 1 discarded", s)
	}
}

// TestChildKilledWhileIdle kills an idle child: the next call does not
// notice.
func TestChildKilledWhileIdle(t *testing.T) {
	cfg := testConfig(t)
	cfg.MaxChildren = 1
	p := newPool(t, cfg)
	for range 3 {
		mustCall(t, p, addScript, "add", "[1, 2]", "3")
		var child *process
		for _, proc := range p.sup.Children() {
			child = proc
		}
		// The process that runs the scripts, as the OOM killer would; in
		// namespaces it is not the one the pool started, which ends with it.
		if err := syscall.Kill(child.ready.PID, syscall.SIGKILL); err != nil {
			t.Fatal(err)
		}
		<-child.Exited() // reaped by the pool
		mustCall(t, p, addScript, "add", "[1, 2]", "3")
	}
}

// waitBusy waits until a child of p is running a call, and returns it.
func waitBusy(t *testing.T, p *Pool) *process {
	t.Helper()
	deadline := time.Now().Add(30 * time.Second)
	for time.Now().Before(deadline) {
		for _, proc := range p.sup.Busy() {
			if proc.Alive() {
				time.Sleep(50 * time.Millisecond) // let the call reach the child
				return proc
			}
		}
		time.Sleep(5 * time.Millisecond)
	}
	t.Fatal("no child became busy")
	return nil
}

func TestCloseStopsCalls(t *testing.T) {
	p, err := New(testConfig(t))
	if err != nil {
		t.Fatal(err)
	}
	done := make(chan error)
	go func() {
		_, err := p.Call(context.Background(), Request{Source: []byte(loopForever), Function: "f"})
		done <- err
	}()
	waitBusy(t, p)
	p.Close()
	if err := <-done; !errors.Is(err, ErrClosed) {
		t.Errorf("call during Close: got %v, want ErrClosed", err)
	}
	if _, err := p.Call(context.Background(), Request{Source: []byte(addScript), Function: "add"}); !errors.Is(err, ErrClosed) {
		t.Errorf("call after Close: got %v, want ErrClosed", err)
	}
	for _, proc := range p.sup.Children() {
		if proc.Alive() {
			t.Errorf("child %d alive after Close", proc.ready.PID)
		}
	}
}

func TestBadCommand(t *testing.T) {
	cfg := testConfig(t)
	cfg.Command = []string{"/bin/true"}
	_, err := New(cfg)
	if !errors.Is(err, ErrStart) || !strings.Contains(err.Error(), "did not start as a Starlark child") {
		t.Errorf("got %v, want ErrStart", err)
	}
}

func TestHostLogWithoutHost(t *testing.T) {
	cfg := testConfig(t)
	var lines logLines
	cfg.Logger = slog.New(logHandler{&lines})
	p := newPool(t, cfg)
	mustCall(t, p, "def f():\n    print(\"to the pool's logger\")\n    return 1\n", "f", "", "1")
	found := false
	for _, l := range lines.get() {
		found = found || strings.Contains(l, "to the pool's logger")
	}
	if !found {
		t.Errorf("pool logger got %q", lines.get())
	}
}

// logHandler is a slog.Handler that keeps messages in a logLines.
type logHandler struct{ lines *logLines }

func (h logHandler) Enabled(context.Context, slog.Level) bool { return true }
func (h logHandler) Handle(ctx context.Context, r slog.Record) error {
	h.lines.Log(ctx, r.Level, r.Message)
	return nil
}
func (h logHandler) WithAttrs([]slog.Attr) slog.Handler { return h }
func (h logHandler) WithGroup(string) slog.Handler      { return h }
