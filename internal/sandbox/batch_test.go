package sandbox

import (
	"context"
	"errors"
	"fmt"
	"sync"
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

	first := make(chan error, 1)
	go func() {
		_, err := m.Call(ctx, []byte(overrun))
		first <- err
	}()
	for m.running.Load() == 0 {
		time.Sleep(time.Millisecond)
	}
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
	long := make(chan error, 1)
	go func() {
		_, err := m.Call(ctx, []byte("[1000000000]")) // a second or more
		long <- err
	}()
	for m.running.Load() == 0 {
		time.Sleep(time.Millisecond)
	}
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
