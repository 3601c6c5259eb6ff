package childproc

import (
	"context"
	"errors"
	"fmt"
	"strings"
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
		// One tenant may take every child: these tests are of children,
		// not of tenants (TestSupervisorTenants).
		MaxChildren: max, PerTenant: max, Spares: spares, Replace: replace, Noun: "fakes",
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
	a, _ := s.Acquire(ctx, "", "a")
	s.Release(a)
	if again, _ := s.Acquire(ctx, "", "a"); again != a {
		t.Fatal("a released child was not reused for its class")
	}
	if b, _ := s.Acquire(ctx, "", "b"); b == a || b.class != "b" {
		t.Fatalf("class b got %+v", b)
	}
	if st := s.Stats(); st.Alive != 2 || st.Started != 2 || st.Idle != 0 {
		t.Fatalf("stats %+v", st)
	}
}

func TestSupervisorEvictsIdleOfAnotherClass(t *testing.T) {
	s := newFakeSupervisor(t, 1, false, false)
	ctx := context.Background()
	a, _ := s.Acquire(ctx, "", "a")
	s.Release(a)
	b, err := s.Acquire(ctx, "", "b")
	if err != nil || b.class != "b" || !a.killed.Load() {
		t.Fatalf("got %+v, %v; a killed: %v", b, err, a.killed.Load())
	}
	if st := s.Stats(); st.Alive != 1 {
		t.Fatalf("stats %+v: the evicted child's slot was not reused", st)
	}
}

func TestSupervisorBusy(t *testing.T) {
	s := newFakeSupervisor(t, 1, false, false)
	a, _ := s.Acquire(context.Background(), "", "a")
	ctx, cancel := context.WithCancel(context.Background())
	cancel()
	_, err := s.Acquire(ctx, "", "a")
	if !errors.Is(err, ErrBusy) || GRPCCode(err) != codes.ResourceExhausted {
		t.Fatalf("got %v, want ErrBusy", err)
	}
	done := make(chan *fakeChild)
	go func() {
		c, _ := s.Acquire(context.Background(), "", "a")
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
	a, _ := s.Acquire(ctx, "", "a") // the last idle one: a spare starts
	waitIdle(t, s, 1)
	s.Discard(a) // a replacement starts
	waitIdle(t, s, 2)
	if st := s.Stats(); st.Started != 3 || st.Discarded != 1 || st.Alive != 2 {
		t.Fatalf("stats %+v", st)
	}
}

func TestSupervisorStartFails(t *testing.T) {
	s := newFakeSupervisor(t, 1, false, false)
	if _, err := s.Acquire(context.Background(), "", "broken"); err == nil || errors.Is(err, ErrBusy) {
		t.Fatalf("got %v, want the start's error", err)
	}
	if c, err := s.Acquire(context.Background(), "", "a"); err != nil || c == nil {
		t.Fatalf("after a failed start: %v; its slot was not given back", err)
	}
}

func TestSupervisorClosed(t *testing.T) {
	s := newFakeSupervisor(t, 1, false, false)
	a, _ := s.Acquire(context.Background(), "", "a")
	s.Close()
	if !a.killed.Load() {
		t.Fatal("Close did not kill a busy child")
	}
	if _, err := s.Acquire(context.Background(), "", "a"); !errors.Is(err, ErrClosed) || GRPCCode(err) != codes.Unavailable {
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

// TestSupervisorTenants floods a Supervisor from one tenant: its calls
// hold all but one child and the rest wait, while another tenant's call
// gets a child at once, and the flood's waiting calls get theirs as the
// flood's own calls end.
func TestSupervisorTenants(t *testing.T) {
	s := NewSupervisor(SupervisorConfig[string, *fakeChild]{
		Start:       func(_ context.Context, k string) (*fakeChild, error) { return &fakeChild{class: k}, nil },
		MaxChildren: 3, PerTenant: 2, Noun: "fakes",
	})
	defer s.Close()
	ctx := context.Background()
	var flood []*fakeChild
	for range 2 {
		c, err := s.Acquire(ctx, "eve", "eve's")
		if err != nil {
			t.Fatal(err)
		}
		flood = append(flood, c)
	}
	waiting := make(chan *fakeChild, 5)
	for range 5 {
		go func() {
			c, err := s.Acquire(ctx, "eve", "eve's")
			if err != nil {
				t.Error(err)
			}
			waiting <- c
		}()
	}
	for s.Stats().Waiting != 5 {
		time.Sleep(time.Millisecond)
	}
	short, cancel := context.WithTimeout(ctx, time.Minute)
	defer cancel()
	bob, err := s.Acquire(short, "bob", "bob's")
	if err != nil {
		t.Fatalf("bob's call, under eve's flood: %v", err)
	}
	s.Release(bob)
	// Bob's idle child stays: eve holds all she may.
	again, err := s.Acquire(short, "bob", "bob's")
	if err != nil || again != bob {
		t.Fatalf("bob's second call got %v, %v; want his idle child", again, err)
	}
	s.Release(again)
	for i := range 5 {
		s.Discard(flood[0])
		flood = append(flood[1:], <-waiting)
		if bob.killed.Load() {
			t.Fatalf("after %d of eve's calls ended, bob's idle child was evicted for hers", i+1)
		}
	}
	if st := s.Stats(); st.Waiting != 0 || st.Alive != 3 {
		t.Fatalf("stats %+v", st)
	}
}

func TestSupervisorEvictsLeastRecentlyUsed(t *testing.T) {
	s := newFakeSupervisor(t, 3, false, false)
	ctx := context.Background()
	var cs []*fakeChild
	for _, k := range []string{"x", "y", "z"} {
		c, _ := s.Acquire(ctx, "", k)
		cs = append(cs, c)
	}
	// Released in the order y, x, z: y is the least recently used.
	for _, i := range []int{1, 0, 2} {
		s.Release(cs[i])
	}
	if w, err := s.Acquire(ctx, "", "w"); err != nil || w.class != "w" {
		t.Fatalf("got %v, %v", w, err)
	}
	for i, want := range []bool{false, true, false} {
		if cs[i].killed.Load() != want {
			t.Errorf("%s killed: %v, want %v", cs[i].class, !want, want)
		}
	}
}

// TestSupervisorWaitsForItsReplacement: a call of a class whose
// replacement is starting waits for it, rather than evict another class's
// idle child.
func TestSupervisorWaitsForItsReplacement(t *testing.T) {
	gate := make(chan struct{})
	var slowStarts atomic.Int32
	s := NewSupervisor(SupervisorConfig[string, *fakeChild]{
		Start: func(_ context.Context, k string) (*fakeChild, error) {
			if k == "slow" && slowStarts.Add(1) == 2 {
				<-gate // the replacement
			}
			return &fakeChild{class: k}, nil
		},
		MaxChildren: 2, PerTenant: 2, Replace: true, Noun: "fakes",
	})
	defer s.Close()
	ctx := context.Background()
	other, _ := s.Acquire(ctx, "", "other")
	s.Release(other)
	slow, _ := s.Acquire(ctx, "", "slow")
	s.Discard(slow) // a replacement starts, and waits at the gate
	for s.Stats().Alive != 2 {
		time.Sleep(time.Millisecond)
	}
	got := make(chan *fakeChild)
	go func() {
		c, _ := s.Acquire(ctx, "", "slow")
		got <- c
	}()
	time.Sleep(20 * time.Millisecond)
	close(gate)
	if c := <-got; c.class != "slow" || other.killed.Load() {
		t.Fatalf("got %+v; the other class's idle child killed: %v", c, other.killed.Load())
	}
}

// TestSupervisorReplacementFails: a call waiting for its class's
// replacement starts its own when the replacement fails.
func TestSupervisorReplacementFails(t *testing.T) {
	gate := make(chan struct{})
	var starts atomic.Int32
	s := NewSupervisor(SupervisorConfig[string, *fakeChild]{
		Start: func(_ context.Context, k string) (*fakeChild, error) {
			if k == "flaky" && starts.Add(1) == 2 {
				<-gate // the replacement, which fails
				return nil, errors.New("cannot start")
			}
			return &fakeChild{class: k}, nil
		},
		MaxChildren: 2, PerTenant: 2, Replace: true, Noun: "fakes",
	})
	defer s.Close()
	ctx := context.Background()
	other, _ := s.Acquire(ctx, "", "other")
	s.Release(other)
	flaky, _ := s.Acquire(ctx, "", "flaky")
	s.Discard(flaky)
	for s.Stats().Alive != 2 {
		time.Sleep(time.Millisecond)
	}
	got := make(chan *fakeChild)
	go func() {
		c, _ := s.Acquire(ctx, "", "flaky")
		got <- c
	}()
	time.Sleep(20 * time.Millisecond)
	close(gate)
	select {
	case c := <-got:
		if c == nil || c.class != "flaky" {
			t.Fatalf("got %+v", c)
		}
	case <-time.After(time.Minute):
		t.Fatal("the call still waits for a replacement that failed")
	}
}

// TestSupervisorCallTakesReleasedChild: a call that starts a child takes
// the first child of its class to be ready, here one another call released
// while the start was still under way; the child it started then waits,
// idle, for the next call. A start that fails goes to its call.
func TestSupervisorCallTakesReleasedChild(t *testing.T) {
	tokens := make(chan struct{}, 8) // one per start of a "slow" child let through
	s := NewSupervisor(SupervisorConfig[string, *fakeChild]{
		Start: func(ctx context.Context, k string) (*fakeChild, error) {
			switch k {
			case "slow":
				select {
				case <-tokens:
				case <-ctx.Done():
					return nil, ctx.Err()
				}
			case "broken":
				return nil, errors.New("cannot start")
			}
			return &fakeChild{class: k}, nil
		},
		MaxChildren: 4, PerTenant: 4, Noun: "fakes",
	})
	defer s.Close()
	ctx, cancel := context.WithTimeout(context.Background(), 30*time.Second)
	defer cancel()

	tokens <- struct{}{}
	first, err := s.Acquire(ctx, "", "slow")
	if err != nil {
		t.Fatal(err)
	}
	got := make(chan *fakeChild)
	go func() {
		c, err := s.Acquire(ctx, "", "slow") // starts a second, which waits for a token
		if err != nil {
			t.Error(err)
		}
		got <- c
	}()
	for !waitingToStart(s, "slow", 1) {
		time.Sleep(time.Millisecond)
	}
	s.Release(first)
	// The released child went to the call waiting for its start, not to
	// the idle list, where a later call could have taken it first.
	late, cancelLate := context.WithTimeout(ctx, 20*time.Millisecond)
	defer cancelLate()
	if c, err := s.Acquire(late, "", "slow"); !errors.Is(err, ErrBusy) {
		t.Fatalf("a later call got %+v, %v; want ErrBusy", c, err)
	}
	second := <-got
	if second != first {
		t.Fatalf("the call got %+v, not the child released while its own started", second)
	}
	tokens <- struct{}{}
	tokens <- struct{}{} // the later call's start, now a spare
	waitIdle(t, s, 2)
	if st := s.Stats(); st.Alive != 3 || st.Started != 3 {
		t.Fatalf("stats %+v: want the two children started idle", st)
	}

	if _, err := s.Acquire(ctx, "", "broken"); err == nil || !strings.Contains(err.Error(), "cannot start") {
		t.Fatalf("a failed start gave %v; want its error", err)
	}

	// A call that leaves while its start is under way: the child, once
	// started, is kept idle.
	var thirds []*fakeChild
	for range 2 { // the idle ones
		c, err := s.Acquire(ctx, "", "slow")
		if err != nil {
			t.Fatal(err)
		}
		thirds = append(thirds, c)
	}
	short, cancelShort := context.WithTimeout(ctx, 20*time.Millisecond)
	defer cancelShort()
	if _, err := s.Acquire(short, "", "slow"); !errors.Is(err, ErrBusy) {
		t.Fatalf("got %v; want ErrBusy", err)
	}
	tokens <- struct{}{}
	waitIdle(t, s, 1)
	s.Release(second)
	for _, c := range thirds {
		s.Release(c)
	}
	waitIdle(t, s, 4)
	if st := s.Stats(); st.Alive != 4 || st.Started != 4 {
		t.Fatalf("stats %+v: want four children, all idle", st)
	}
}

// waitingToStart reports whether n calls of class k wait in startFor.
func waitingToStart(s *Supervisor[string, *fakeChild], k string, n int) bool {
	s.mu.Lock()
	defer s.mu.Unlock()
	return len(s.starting[k]) == n
}
