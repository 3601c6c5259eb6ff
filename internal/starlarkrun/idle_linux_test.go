package starlarkrun

import (
	"context"
	"encoding/json"
	"log/slog"
	"os"
	"slices"
	"strconv"
	"testing"
	"time"

	"go.starlark.net/starlark"
	"golang.org/x/sys/unix"
)

// TestLongCallsDropToTheIdleClass checks, from the kernel's view of real
// children's threads, which calls run in the idle CPU class: bob's call
// that computed past IdleAfter while another user (eve) has a call running,
// all of a heavy user's calls, and no call of a user alone or of a short
// call. After an idle call the child's threads are back in the normal class
// (the idle one ended with its call). The children hold their seccomp
// filter, so this also proves the filter lets a thread move itself.
func TestLongCallsDropToTheIdleClass(t *testing.T) {
	const script = "def spin(n):\n    for i in range(n):\n        pass\n    log(\"spun\")\n    return n\n"
	// A long call computes just past the first check (memoryCheckSteps),
	// where it goes idle, then logs at once: once idle it may get no CPU
	// while the machine is busy, so it must have next to nothing left to do.
	long := iterationsPast(t, script, memoryCheckSteps)
	for _, tc := range []struct {
		name      string
		idleAfter time.Duration
		n         int
		eve       bool // eve has a call running meanwhile
		heavy     bool // bob keeps more than a CPU's worth of calls running
		wantIdle  bool // bob's calling thread is in the idle class while it logs
	}{
		{"long call beside another user's", time.Nanosecond, long, true, false, true},
		{"short call beside another user's", time.Nanosecond, 10, true, false, false},
		{"short call of a heavy user beside another's", time.Nanosecond, 10, true, true, true},
		{"long call of a user alone", time.Nanosecond, long, false, false, false},
		{"heavy user alone", time.Nanosecond, 10, false, true, false},
		{"long call, never idle", 0, long, true, true, false},
	} {
		t.Run(tc.name, func(t *testing.T) {
			cfg := testConfig(t)
			cfg.MaxChildren, cfg.WarmChildren, cfg.MaxChildrenPerCaller, cfg.IdleAfter = 2, 2, 1, tc.idleAfter
			p := newPool(t, cfg)
			if tc.eve {
				// Eve's call waits in its log line (a host call) until the
				// test ends: a call running, in the normal class.
				inLog, release := make(chan struct{}), make(chan struct{})
				done := make(chan struct{})
				go func() {
					defer close(done)
					host := LogFunc(func(context.Context, slog.Level, string) { close(inLog); <-release })
					p.Call(context.Background(), Request{Name: "eve.star", Source: []byte("def f():\n    log(\"x\")\n"),
						Function: "f", Caller: "eve", Host: host})
				}()
				<-inLog
				t.Cleanup(func() { close(release); <-done })
			}
			var seen, before []int
			host := LogFunc(func(context.Context, slog.Level, string) { seen = idleThreads(p) })
			for i := range 2 { // the second call, after the first's thread ended
				if tc.heavy { // as if bob had kept ten calls running for a while
					p.load.mu.Lock()
					p.load.callers["bob"] = &load{avg: 10 * heavyLoad, last: time.Now()}
					p.load.mu.Unlock()
				}
				ctx, cancel := context.WithTimeout(context.Background(), 30*time.Second)
				args, _ := json.Marshal([]int{tc.n})
				out, err := p.Call(ctx, Request{Name: "spin.star", Source: []byte(script), Function: "spin", Args: args,
					Caller: "bob", Limits: Limits{Timeout: 25 * time.Second}, Host: host})
				cancel()
				if err != nil || string(out) != string(args[1:len(args)-1]) {
					t.Fatalf("call %d: %s, %v", i, out, err)
				}
				// The previous call's idle thread may still be ending (or, a
				// child's main thread, be parked for good: it cannot end);
				// the check below sees them all end.
				others := slices.DeleteFunc(slices.Clone(seen), func(tid int) bool { return slices.Contains(before, tid) })
				before = seen
				if want := map[bool]int{true: 1}[tc.wantIdle]; len(others) != want {
					t.Errorf("call %d: threads %v of the children in the idle class while it ran, want %d", i, seen, want)
				}
			}
			// Once a call has answered, its thread ends soon after.
			deadline := time.Now().Add(10 * time.Second)
			for {
				left := slices.DeleteFunc(idleThreads(p), func(tid int) bool { return slices.Contains(mainThreads(p), tid) })
				if len(left) == 0 {
					break
				}
				if time.Now().After(deadline) {
					t.Fatalf("threads %v still in the idle class after their calls ended", left)
				}
				time.Sleep(10 * time.Millisecond)
			}
		})
	}
}

// iterationsPast returns the n for which spin(n) of script takes a thousand
// steps more than steps, counted by running it in this process.
func iterationsPast(t *testing.T, script string, steps uint64) int {
	_, prog, err := compile("spin.star", []byte(script))
	if err != nil {
		t.Fatal(err)
	}
	predeclared := starlark.StringDict{"log": starlark.NewBuiltin("log", func(*starlark.Thread, *starlark.Builtin, starlark.Tuple, []starlark.Tuple) (starlark.Value, error) {
		return starlark.None, nil
	})}
	globals, err := prog.Init(&starlark.Thread{}, predeclared)
	if err != nil {
		t.Fatal(err)
	}
	count := func(n int) uint64 {
		th := &starlark.Thread{}
		if _, err := starlark.Call(th, globals["spin"], starlark.Tuple{starlark.MakeInt(n)}, nil); err != nil {
			t.Fatal(err)
		}
		return th.ExecutionSteps()
	}
	base, per := count(0), (count(1000)-count(0))/1000
	return int((steps+1000-base)/per) + 1
}

// mainThreads returns the pool's children's main threads: their process ids
// (the children themselves, under the namespace layer's processes).
func mainThreads(p *Pool) []int {
	var pids []int
	for _, c := range p.sup.Children() {
		pids = append(pids, c.ready.PID)
	}
	return pids
}

// idleThreads returns the threads of the pool's children in SCHED_IDLE.
func idleThreads(p *Pool) []int {
	var idle []int
	for _, pid := range mainThreads(p) {
		tids, err := os.ReadDir("/proc/" + strconv.Itoa(pid) + "/task")
		if err != nil {
			continue // the child ended
		}
		for _, d := range tids {
			tid, err := strconv.Atoi(d.Name())
			if err != nil {
				continue
			}
			attr, err := unix.SchedGetAttr(tid, 0)
			if err != nil {
				continue // the thread ended
			}
			if attr.Policy == unix.SCHED_IDLE {
				idle = append(idle, tid)
			}
		}
	}
	return idle
}
