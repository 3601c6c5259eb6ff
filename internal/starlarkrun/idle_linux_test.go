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

	"golang.org/x/sys/unix"
)

// TestLongCallsDropToTheIdleClass checks, from the kernel's view of the
// child's threads, that a call which computed past Config.IdleAfter runs in
// the idle CPU class, that a short call does not, and that the next call
// after a long one starts in the normal class again (the idle thread ended
// with its call). The child holds its seccomp filter, so this also proves the
// filter lets a thread move itself.
func TestLongCallsDropToTheIdleClass(t *testing.T) {
	const script = "def spin(n):\n    for i in range(n):\n        pass\n    log(\"spun\")\n    return n\n"
	for _, tc := range []struct {
		name      string
		idleAfter time.Duration
		n         int
		wantIdle  bool // the calling thread is in the idle class while it logs
	}{
		// 1 ns: the first check, a few milliseconds of steps in, moves it.
		{"long call", time.Nanosecond, 2_000_000, true},
		{"short call", time.Nanosecond, 10, false},
		{"long call, never idle", 0, 2_000_000, false},
	} {
		t.Run(tc.name, func(t *testing.T) {
			cfg := testConfig(t)
			cfg.MaxChildren, cfg.WarmChildren, cfg.IdleAfter = 1, 1, tc.idleAfter
			p := newPool(t, cfg)
			children := p.sup.Children()
			if len(children) != 1 {
				t.Fatalf("%d warm children, want 1", len(children))
			}
			pid := children[0].ready.PID // the child itself, under the namespace layer's process
			var seen, before []int
			host := LogFunc(func(context.Context, slog.Level, string) { seen = idleThreads(t, pid) })
			for i := range 2 { // the second call runs on the same child, after the first's thread ended
				ctx, cancel := context.WithTimeout(context.Background(), 30*time.Second)
				args, _ := json.Marshal([]int{tc.n})
				out, err := p.Call(ctx, Request{Name: "spin.star", Source: []byte(script), Function: "spin", Args: args,
					Limits: Limits{Timeout: 25 * time.Second}, Host: host})
				cancel()
				if err != nil || string(out) != string(args[1:len(args)-1]) {
					t.Fatalf("call %d: %s, %v", i, out, err)
				}
				// The main thread, if a call ran on it, cannot end: the runtime
				// parks it for good instead, and it is not counted after its call.
				wedged := slices.Contains(before, pid)
				others := slices.DeleteFunc(slices.Clone(seen), func(tid int) bool { return tid == pid && wedged })
				before = seen
				switch {
				case tc.wantIdle && len(others) != 1, !tc.wantIdle && len(seen) != 0:
					t.Errorf("call %d: threads %v of the child in the idle class while it ran (main thread %d), want idle %v",
						i, seen, pid, tc.wantIdle)
				}
				if got := p.sup.Children(); len(got) != 1 || got[0].ready.PID != pid {
					t.Fatalf("call %d did not run on the warm child %d", i, pid)
				}
			}
			// Once a call has answered, its thread ends soon after.
			deadline := time.Now().Add(10 * time.Second)
			for {
				left := slices.DeleteFunc(idleThreads(t, pid), func(tid int) bool { return tid == pid })
				if len(left) == 0 {
					break
				}
				if time.Now().After(deadline) {
					t.Fatalf("child %d still has threads %v in the idle class after its calls ended", pid, left)
				}
				time.Sleep(10 * time.Millisecond)
			}
		})
	}
}

// idleThreads returns the threads of process pid in SCHED_IDLE.
func idleThreads(t *testing.T, pid int) []int {
	t.Helper()
	tids, err := os.ReadDir("/proc/" + strconv.Itoa(pid) + "/task")
	if err != nil {
		t.Fatal(err)
	}
	var idle []int
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
	return idle
}
