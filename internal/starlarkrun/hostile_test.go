package starlarkrun

import (
	"context"
	"errors"
	"strings"
	"testing"
	"time"

	"google.golang.org/grpc/codes"

	"github.com/hivemind/taskworker/internal/childproc"
)

// TestHostile runs scripts that try to take more than they are given. Each
// must end with its own error, quickly, and leave the pool serving.
func TestHostile(t *testing.T) {
	cfg := testConfig(t)
	cfg.MaxChildren = 2
	p := newPool(t, cfg)
	for _, tc := range []struct {
		name   string
		src    string
		limits Limits
		want   error
		code   codes.Code
		msg    string
		within time.Duration // the call's wall time, at most
	}{
		{
			name:   "infinite loop",
			src:    loopForever,
			limits: Limits{Timeout: 300 * time.Millisecond},
			want:   ErrTimeout, code: codes.DeadlineExceeded, msg: "ran past its time limit of 300ms",
			within: 5 * time.Second,
		},
		{
			name:   "infinite loop at top level",
			src:    "while True:\n    pass\ndef f():\n    pass\n",
			limits: Limits{Timeout: 300 * time.Millisecond},
			want:   ErrTimeout, code: codes.DeadlineExceeded, msg: "time limit",
			within: 5 * time.Second,
		},
		{
			name: "one huge string", // past RLIMIT_AS in one allocation: the runtime dies
			src:  "def f():\n    return len(\"x\" * 1000000000)\n",
			want: ErrMemoryLimit, code: codes.ResourceExhausted, msg: "went past its 64 MiB memory limit",
		},
		{
			name: "a string over the limit", // under RLIMIT_AS: the live-heap watch stops it
			src:  "def f():\n    s = \"x\" * 30000000\n    t = s + \"y\"\n    u = t + \"z\"\n    for i in range(1000000):\n        pass\n    return len(u)\n",
			want: ErrMemoryLimit, code: codes.ResourceExhausted, msg: "memory limit",
		},
		{
			name:   "list of lists",
			src:    "def f():\n    x = []\n    for i in range(1000000):\n        x.append([i] * 1000)\n    return len(x)\n",
			limits: Limits{Timeout: time.Minute},
			want:   ErrMemoryLimit, code: codes.ResourceExhausted, msg: "memory limit",
		},
		{
			name:   "doubling list",
			src:    "def f():\n    x = [[]]\n    for i in range(64):\n        x = x + x\n    return len(x)\n",
			limits: Limits{Timeout: time.Minute},
			want:   ErrMemoryLimit, code: codes.ResourceExhausted, msg: "memory limit",
		},
		{
			name:   "memory at top level",
			src:    "big = [[i] * 100 for i in range(10000000)]\ndef f():\n    return 1\n",
			limits: Limits{Timeout: time.Minute},
			want:   ErrMemoryLimit, code: codes.ResourceExhausted, msg: "memory limit",
		},
		{
			name: "deep recursion",
			src:  "def f(n=0):\n    return f(n + 1)\n",
			want: ErrScript, code: codes.Unknown, msg: "function f called recursively",
		},
		{
			name: "mutual recursion",
			src:  "def g(n):\n    return f(n)\n\ndef f(n=0):\n    return g(n + 1)\n",
			want: ErrScript, code: codes.Unknown, msg: "called recursively",
		},
		{
			name: "deep nesting",
			src:  "def f():\n    x = []\n    for i in range(100000):\n        x = [x]\n    return x\n",
			want: ErrScript, code: codes.Unknown, msg: "result[0][0][0][0][0][0][0][0]...[0]: nested more than 1000 levels",
		},
		{
			name: "huge output",
			src:  "def f():\n    return \"x\" * 2000000\n",
			want: ErrOutputTooLarge, code: codes.ResourceExhausted, msg: "returned more than 1 MiB of JSON",
		},
		{
			name: "huge output in many pieces",
			src:  "def f():\n    return [\"abc\"] * 500000\n",
			want: ErrOutputTooLarge, code: codes.ResourceExhausted, msg: "returned more than 1 MiB of JSON",
		},
		{
			name: "huge error message",
			src:  "def f():\n    fail(\"x\" * 10000000)\n",
			want: ErrScript, code: codes.Unknown, msg: "[cut]",
		},
		{
			name: "load",
			src:  "load(\"/etc/passwd\", \"root\")\ndef f():\n    return root\n",
			want: ErrInvalidScript, code: codes.InvalidArgument, msg: "load() is not supported",
		},
		{
			name: "read a file",
			src:  "def f():\n    return open(\"/etc/passwd\").read()\n",
			want: ErrInvalidScript, code: codes.InvalidArgument, msg: "undefined: open",
		},
		{
			name: "environment and processes",
			src:  "def f():\n    return os.getenv(\"HOME\")\n",
			want: ErrInvalidScript, code: codes.InvalidArgument, msg: "undefined: os",
		},
		{
			name: "the Python spelling of a huge string", // Starlark has no **
			src:  "def f():\n    return \"x\" * 10**9\n",
			want: ErrInvalidScript, code: codes.InvalidArgument, msg: "got '**'",
		},
		{
			name:   "log flood",
			src:    "def f():\n    for i in range(100000):\n        print(\"flood\", i)\n    fail(\"flooded\")\n",
			limits: Limits{Timeout: time.Minute},
			want:   ErrScript, code: codes.Unknown, msg: "flooded",
		},
	} {
		t.Run(tc.name, func(t *testing.T) {
			start := time.Now()
			_, err := p.Call(context.Background(), Request{Name: "test.star", Source: []byte(tc.src), Function: "f", Limits: tc.limits})
			elapsed := time.Since(start)
			t.Logf("%s: %v", elapsed.Round(time.Millisecond), err)
			if !errors.Is(err, tc.want) {
				t.Fatalf("got %v, want %v", err, tc.want)
			}
			if !strings.Contains(err.Error(), tc.msg) {
				t.Errorf("error %q does not contain %q", err, tc.msg)
			}
			if code := childproc.GRPCCode(err); code != tc.code {
				t.Errorf("code %s, want %s", code, tc.code)
			}
			if tc.within > 0 && elapsed > tc.within {
				t.Errorf("took %s, want at most %s", elapsed, tc.within)
			}
			mustCall(t, p, addScript, "add", "[1, 2]", "3")
		})
	}
}

// TestMemoryWithinLimit checks that the memory limit does not stop a
// script that stays under it.
func TestMemoryWithinLimit(t *testing.T) {
	p := newPool(t, testConfig(t))
	// 3 million list slots of 16 bytes: 48 MB, under the default 64 MiB.
	src := "def f():\n    x = [0] * 3000000\n    y = [i for i in range(100000)]\n    return len(x) + len(y)\n"
	mustCall(t, p, src, "f", "", "3100000")
	// Twice that is over it, once the script holds it across a check (a
	// garbage collection, or 2^18 steps: the loop); a script that frees it
	// before any check may go unnoticed, up to the address-space cap (see
	// the package's Caveats).
	// The loop is long enough for a garbage collection to end while it
	// runs, even on a loaded machine.
	src = "def f():\n    x = [0] * 6000000\n    n = 0\n    for i in range(1000000):\n        n += 1\n    return len(x) + n\n"
	_, err := p.Call(context.Background(), Request{Source: []byte(src), Function: "f", Limits: Limits{Timeout: time.Minute}})
	if !errors.Is(err, ErrMemoryLimit) {
		t.Errorf("96 MB: got %v, want ErrMemoryLimit", err)
	}
	// With a larger limit, it fits.
	out, err := p.Call(context.Background(), Request{Source: []byte(src), Function: "f", Limits: Limits{Memory: 256 * MiB, Timeout: time.Minute}})
	if err != nil || string(out) != "7000000" {
		t.Errorf("96 MB under 256 MiB: got %s, %v", out, err)
	}
}
