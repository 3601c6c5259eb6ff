package sandbox

import (
	"context"
	"errors"
	"fmt"
	"log/slog"
	"sync"
	"sync/atomic"
	"testing"
	"time"

	"github.com/hivemind/taskworker/internal/childproc"
)

// TestBatchedCallsKeepTheirLimits: a caller's calls that wait while its
// turn is busy go to a child together, and each keeps its own limits: the
// one that overruns is stopped with ErrTimeout (its process with it), the
// calls of the batch the child had not started run on the next process,
// and every other call gets its own answer.
func TestBatchedCallsKeepTheirLimits(t *testing.T) {
	r := newTestRuntime(t, isolated(t, DefaultConfig()))
	// One call at a time (one turn), so that the others queue.
	m := load(t, r, guestWasm(t, hostileGuest), Spec{Export: "work", Concurrency: 1, Limits: Limits{Timeout: time.Second}})
	ctx, cancel := context.WithTimeout(context.Background(), 2*time.Minute)
	defer cancel()
	const overrun = "[100000000000]" // minutes of work
	inputs := []string{"[10]", "[20]", overrun, "[30]", "[40]", "[50]"}

	first := callHolding(ctx, m, []byte(overrun))
	var wg sync.WaitGroup
	outs, errs := make([]string, len(inputs)), make([]error, len(inputs))
	for i, input := range inputs {
		wg.Go(func() {
			out, err := m.Call(ctx, []byte(input))
			outs[i], errs[i] = string(out), err
		})
	}
	for m.Stats().Queued != len(inputs) {
		if ctx.Err() != nil {
			t.Fatalf("the calls did not queue behind the first: %+v", m.Stats())
		}
		time.Sleep(time.Millisecond)
	}
	if err := <-first; !errors.Is(err, ErrTimeout) {
		t.Fatalf("the first call: %v, want ErrTimeout", err)
	}
	wg.Wait()
	for i, input := range inputs {
		if input == overrun {
			if !errors.Is(errs[i], ErrTimeout) {
				t.Errorf("work%s: %q, %v, want ErrTimeout", input, outs[i], errs[i])
			}
			continue
		}
		var n int
		fmt.Sscanf(input, "[%d]", &n)
		if want := fmt.Sprint(work(n)); errs[i] != nil || outs[i] != want {
			t.Errorf("work%s = %q, %v, want %s", input, outs[i], errs[i], want)
		}
	}
	st := m.Stats()
	if st.Batched < 2 {
		t.Errorf("stats %+v: no batch was sent", st)
	}
	if st.Calls != uint64(1+len(inputs)) || st.Queued != 0 {
		t.Errorf("stats %+v: want %d calls run, none queued", st, 1+len(inputs))
	}
}

// TestQueuedCallLeaves: a call that waits for its caller's turn until its
// deadline ends with ErrTenantCap, without running, and the call it waited
// behind is not disturbed.
func TestQueuedCallLeaves(t *testing.T) {
	r := newTestRuntime(t, isolated(t, DefaultConfig()))
	m := load(t, r, guestWasm(t, hostileGuest), Spec{Export: "work", Concurrency: 1, Limits: Limits{Timeout: time.Minute}})
	ctx, cancel := context.WithTimeout(context.Background(), 2*time.Minute)
	defer cancel()
	long := callHolding(ctx, m, []byte("[1000000000]")) // a second or more
	short, stop := context.WithTimeout(ctx, 50*time.Millisecond)
	defer stop()
	_, err := m.Call(short, []byte("[1]"))
	if !errors.Is(err, childproc.ErrTenantCap) || childproc.GRPCCode(err) != childproc.KindExhausted.Code() {
		t.Errorf("a call queued past its deadline: %v, want ErrTenantCap", err)
	}
	if err := <-long; err != nil {
		t.Errorf("the call it waited behind: %v", err)
	}
	if st := m.Stats(); st.Calls != 1 || st.Queued != 0 || st.Discarded != 0 {
		t.Errorf("stats %+v: want one call run, none queued, no process lost", st)
	}
}

// TestHeldAnswersKeepTheirCalls: in a batch, a call that logged a line and
// ended, then one that overruns without sending anything, then a quick
// one. The child may hold answers back (holdAnswers), but not the answer
// of a call that sent a frame: that call is answered once, as itself, and
// is not taken for the one at fault when the process is killed; the
// overrun ends with ErrTimeout, and the quick call behind it runs again
// and is answered.
func TestHeldAnswersKeepTheirCalls(t *testing.T) {
	r := newTestRuntime(t, isolated(t, DefaultConfig()))
	var lines sync.Map // log lines seen by the host, and how often
	host := hostFunc(func(_ context.Context, _ slog.Level, msg string) {
		n, _ := lines.LoadOrStore(msg, new(atomic.Int32))
		n.(*atomic.Int32).Add(1)
	})
	m, err := r.Load(context.Background(), guestWasm(t, hostileGuest),
		Spec{Export: "log_work", Concurrency: 1, Limits: Limits{Timeout: time.Second}}, host)
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { m.Close(context.Background()) })
	ctx, cancel := context.WithTimeout(context.Background(), 2*time.Minute)
	defer cancel()

	// A first call holds the one turn while the others queue, in order.
	first := callHolding(ctx, m, []byte("[0, 300000000]"))        // a few hundred ms
	inputs := []string{"[1, 10]", "[0, 100000000000]", "[0, 20]"} // logs; overruns; quick
	errs := make([]error, len(inputs))
	outs := make([]string, len(inputs))
	var wg sync.WaitGroup
	for i, input := range inputs {
		wg.Go(func() {
			out, err := m.Call(ctx, []byte(input))
			outs[i], errs[i] = string(out), err
		})
		for m.Stats().Queued != i+1 {
			if ctx.Err() != nil {
				t.Fatalf("call %d did not queue: %+v", i, m.Stats())
			}
			time.Sleep(time.Millisecond)
		}
	}
	if err := <-first; err != nil {
		t.Fatalf("the first call: %v", err)
	}
	wg.Wait()
	if want := fmt.Sprint(work(10)); errs[0] != nil || outs[0] != want {
		t.Errorf("the call that logged: %q, %v; want %s", outs[0], errs[0], want)
	}
	if n, ok := lines.Load("line 0"); !ok || n.(*atomic.Int32).Load() != 1 {
		t.Errorf("its log line reached the host %v times, want once", n)
	}
	if !errors.Is(errs[1], ErrTimeout) {
		t.Errorf("the overrun: %q, %v; want ErrTimeout", outs[1], errs[1])
	}
	if want := fmt.Sprint(work(20)); errs[2] != nil || outs[2] != want {
		t.Errorf("the quick call behind it: %q, %v; want %s", outs[2], errs[2], want)
	}
}

// hostFunc is a Host that gives each log line to a func.
type hostFunc func(ctx context.Context, level slog.Level, msg string)

func (h hostFunc) Log(ctx context.Context, level slog.Level, msg string) { h(ctx, level, msg) }
