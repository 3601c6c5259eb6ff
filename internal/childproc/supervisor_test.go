package childproc

import (
	"context"
	"errors"
	"fmt"
	"sync/atomic"
	"testing"
	"time"

	"google.golang.org/grpc/codes"
)

// fakeChild stands for a process in the Supervisor's own tests: the
// runners' tests run the real ones.
type fakeChild struct {
	class  string
	killed atomic.Bool
}

func (c *fakeChild) Kill() { c.killed.Store(true) }

func newFakeSupervisor(t *testing.T, max int, spares, replace bool) *Supervisor[string, *fakeChild] {
	t.Helper()
	s := NewSupervisor(SupervisorConfig[string, *fakeChild]{
		Start: func(_ context.Context, k string) (*fakeChild, error) {
			if k == "broken" {
				return nil, errors.New("cannot start")
			}
			return &fakeChild{class: k}, nil
		},
		MaxChildren: max, Spares: spares, Replace: replace, Noun: "fakes",
	})
	t.Cleanup(func() {
		all := s.Children()
		s.Close()
		for _, c := range all {
			if !c.killed.Load() {
				t.Errorf("a %s child outlived Close", c.class)
			}
		}
	})
	return s
}

// waitIdle waits for background starts to settle at n idle children.
func waitIdle(t *testing.T, s *Supervisor[string, *fakeChild], n int) {
	t.Helper()
	for s.Stats().Idle != n {
		if s.Stats().Alive < n {
			t.Fatalf("stats %+v: cannot reach %d idle", s.Stats(), n)
		}
		time.Sleep(time.Millisecond)
	}
}

func TestSupervisorReuse(t *testing.T) {
	s := newFakeSupervisor(t, 2, false, false)
	ctx := context.Background()
	a, _ := s.Acquire(ctx, "a")
	s.Release(a)
	if again, _ := s.Acquire(ctx, "a"); again != a {
		t.Fatal("a released child was not reused for its class")
	}
	if b, _ := s.Acquire(ctx, "b"); b == a || b.class != "b" {
		t.Fatalf("class b got %+v", b)
	}
	if st := s.Stats(); st.Alive != 2 || st.Started != 2 || st.Idle != 0 {
		t.Fatalf("stats %+v", st)
	}
}

func TestSupervisorEvictsIdleOfAnotherClass(t *testing.T) {
	s := newFakeSupervisor(t, 1, false, false)
	ctx := context.Background()
	a, _ := s.Acquire(ctx, "a")
	s.Release(a)
	b, err := s.Acquire(ctx, "b")
	if err != nil || b.class != "b" || !a.killed.Load() {
		t.Fatalf("got %+v, %v; a killed: %v", b, err, a.killed.Load())
	}
	if st := s.Stats(); st.Alive != 1 {
		t.Fatalf("stats %+v: the evicted child's slot was not reused", st)
	}
}

func TestSupervisorBusy(t *testing.T) {
	s := newFakeSupervisor(t, 1, false, false)
	a, _ := s.Acquire(context.Background(), "a")
	ctx, cancel := context.WithCancel(context.Background())
	cancel()
	_, err := s.Acquire(ctx, "a")
	if !errors.Is(err, ErrBusy) || GRPCCode(err) != codes.ResourceExhausted {
		t.Fatalf("got %v, want ErrBusy", err)
	}
	done := make(chan *fakeChild)
	go func() {
		c, _ := s.Acquire(context.Background(), "a")
		done <- c
	}()
	s.Release(a)
	if got := <-done; got != a {
		t.Fatal("a waiting call did not get the released child")
	}
}

func TestSupervisorSparesAndReplacements(t *testing.T) {
	s := newFakeSupervisor(t, 3, true, true)
	ctx := context.Background()
	if err := s.Warm(ctx, "a", 1); err != nil {
		t.Fatal(err)
	}
	a, _ := s.Acquire(ctx, "a") // the last idle one: a spare starts
	waitIdle(t, s, 1)
	s.Discard(a) // a replacement starts
	waitIdle(t, s, 2)
	if st := s.Stats(); st.Started != 3 || st.Discarded != 1 || st.Alive != 2 {
		t.Fatalf("stats %+v", st)
	}
}

func TestSupervisorStartFails(t *testing.T) {
	s := newFakeSupervisor(t, 1, false, false)
	if _, err := s.Acquire(context.Background(), "broken"); err == nil || errors.Is(err, ErrBusy) {
		t.Fatalf("got %v, want the start's error", err)
	}
	if c, err := s.Acquire(context.Background(), "a"); err != nil || c == nil {
		t.Fatalf("after a failed start: %v; its slot was not given back", err)
	}
}

func TestSupervisorClosed(t *testing.T) {
	s := newFakeSupervisor(t, 1, false, false)
	a, _ := s.Acquire(context.Background(), "a")
	s.Close()
	if !a.killed.Load() {
		t.Fatal("Close did not kill a busy child")
	}
	if _, err := s.Acquire(context.Background(), "a"); !errors.Is(err, ErrClosed) || GRPCCode(err) != codes.Unavailable {
		t.Fatalf("after Close: %v", err)
	}
	if s.Track(func() {}) {
		t.Fatal("Track ran a goroutine after Close")
	}
}

func TestGRPCCode(t *testing.T) {
	for _, tt := range []struct {
		err  error
		want codes.Code
	}{
		{nil, codes.OK},
		{fmt.Errorf("f: %w", ErrTimeout), codes.DeadlineExceeded},
		{context.DeadlineExceeded, codes.DeadlineExceeded},
		{context.Canceled, codes.Canceled},
		{ErrCanceled, codes.Canceled},
		{ErrMemoryLimit, codes.ResourceExhausted},
		{ErrOutputTooLarge, codes.ResourceExhausted},
		{ErrInputTooLarge, codes.InvalidArgument},
		{NewError(KindCrashed, "crashed"), codes.Aborted},
		{&CallError{Sentinel: ErrTimeout}, codes.DeadlineExceeded},
		{ErrClosed, codes.Unavailable},
		{fmt.Errorf("start: %w", ErrUnconfined), codes.FailedPrecondition},
		{errors.New("not ours"), codes.Unknown},
	} {
		if got := GRPCCode(tt.err); got != tt.want {
			t.Errorf("GRPCCode(%v) = %v, want %v", tt.err, got, tt.want)
		}
	}
}
