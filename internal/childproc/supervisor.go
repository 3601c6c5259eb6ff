package childproc

import (
	"context"
	"fmt"
	"log/slog"
	"maps"
	"slices"
	"sync"
	"sync/atomic"
)

// Child is what a Supervisor keeps: a payload's handle on one child
// process, or, for a payload that runs code in the worker's own process
// (WebAssembly without isolation), on one instance.
type Child interface {
	comparable
	// Kill ends the child at once. It is safe from any goroutine, any
	// number of times.
	Kill()
}

// SupervisorConfig is how a Supervisor starts and keeps children.
type SupervisorConfig[K comparable, C Child] struct {
	// Start starts a child of class k and returns it once it is ready to
	// serve calls. ctx ends when the Supervisor closes. A goroutine that
	// outlives Start (the wait for a process's exit) is run by
	// Supervisor.Track, so that Close waits for it.
	Start func(ctx context.Context, k K) (C, error)
	// MaxChildren bounds the children alive or starting, of all classes:
	// the calls that run at once. Past it, a call takes the place of an
	// idle child of another class, or waits.
	MaxChildren int
	// PerTenant bounds the children one tenant's calls hold at once
	// (FairConfig.PerTenant). Zero: DefaultPerTenant(MaxChildren), all
	// but one and no more than the CPUs.
	PerTenant int
	// Spares: when a call takes the last idle child of its class, another
	// starts in the background (room permitting), so that the next call
	// does not wait for a process to start.
	Spares bool
	// Replace: a discarded child is replaced in the background (room
	// permitting).
	Replace bool
	// Noun names the children in messages: "Starlark processes",
	// "instances of this function".
	Noun string
	// Logger receives the failures of background starts.
	Logger *slog.Logger
}

// Supervisor keeps a payload's children, per class: the idle ones, the
// count of those alive or starting, spares and replacements. Calls take a
// child with Acquire and give it back with Release (healthy) or Discard
// (killed, timed out, trapped: its state is unknown). Children of one class
// are interchangeable; a class is what a child is started for and cannot
// change (its memory limit, its module, its tenant).
//
// Acquire is the one place where a call gets a child: first a slot from a
// FairQueue of MaxChildren slots shared by the tenants (the users calling),
// then a child of the call's class. Making room evicts the idle child
// used least recently, of any class.
//
// It is safe for concurrent use.
type Supervisor[K comparable, C Child] struct {
	cfg SupervisorConfig[K, C]
	log *slog.Logger

	// ctx ends with Close, stopping children that are starting.
	ctx    context.Context
	cancel context.CancelFunc

	fair *FairQueue

	mu      sync.Mutex
	closed  bool
	idle    map[K][]C    // last in, first out: the warmest first
	all     map[C]K      // started and not yet discarded
	alive   int          // children alive or starting: at most MaxChildren
	holder  map[C]string // the tenant of the call each busy child serves
	used    map[C]uint64 // when each idle child was released (a count of releases)
	uses    uint64       // releases so far
	pending map[K]int    // spares and replacements starting, by class
	// starting are the calls waiting in startFor, by class, oldest
	// first: a child released goes to the first of them.
	starting map[K][]*startTicket[C]
	changed  chan struct{}

	wg sync.WaitGroup // every goroutine Track runs

	started, discarded atomic.Uint64
}

// SupervisorStats counts a Supervisor's children.
type SupervisorStats struct {
	Alive     int    // children alive or starting
	Idle      int    // children waiting for a call
	Waiting   int    // calls waiting for their turn (FairQueue)
	Started   uint64 // children started
	Discarded uint64 // children killed or lost (timeouts, traps, memory, crashes)
}

// NewSupervisor returns a Supervisor with no children.
func NewSupervisor[K comparable, C Child](cfg SupervisorConfig[K, C]) *Supervisor[K, C] {
	s := &Supervisor[K, C]{
		cfg:      cfg,
		log:      cfg.Logger,
		idle:     map[K][]C{},
		all:      map[C]K{},
		holder:   map[C]string{},
		used:     map[C]uint64{},
		pending:  map[K]int{},
		starting: map[K][]*startTicket[C]{},
		changed:  make(chan struct{}),
	}
	s.fair = NewFairQueue(FairConfig{Slots: cfg.MaxChildren, PerTenant: cfg.PerTenant, Noun: cfg.Noun})
	if s.log == nil {
		s.log = slog.Default()
	}
	s.ctx, s.cancel = context.WithCancel(context.Background())
	return s
}

// Warm starts n children of class k and keeps them idle, or fewer if
// MaxChildren is reached. It returns the first error of a start.
func (s *Supervisor[K, C]) Warm(ctx context.Context, k K, n int) error {
	for range n {
		if !s.reserve() {
			return nil
		}
		c, err := s.start(ctx, k)
		if err != nil {
			return err
		}
		s.Release(c)
	}
	return nil
}

// Acquire returns a child of class k for a call of tenant: once the
// tenant's turn comes in the Supervisor's FairQueue (at most PerTenant
// children per tenant; when children are short, the tenant holding fewest
// goes first), an idle child of class k, or one it starts if there is
// room, or in place of the idle child of another class used least
// recently. It waits until ctx ends (ErrBusy, or ErrTenantCap when the
// tenant holds all it may). Release or Discard gives the child, and the
// tenant's slot, back.
func (s *Supervisor[K, C]) Acquire(ctx context.Context, tenant string, k K) (C, error) {
	var zero C
	if err := s.fair.Acquire(ctx, tenant); err != nil {
		return zero, err
	}
	c, err := s.acquire(ctx, k)
	if err != nil {
		s.fair.Release(tenant)
		return zero, err
	}
	s.mu.Lock()
	s.holder[c] = tenant
	s.mu.Unlock()
	return c, nil
}

// takeIdleLocked takes the idle child of class k released last, if any,
// and says whether it was the last idle one; s.mu is held.
func (s *Supervisor[K, C]) takeIdleLocked(k K) (c C, last, ok bool) {
	l := s.idle[k]
	if len(l) == 0 {
		return c, false, false
	}
	c = l[len(l)-1]
	s.idle[k] = l[:len(l)-1]
	delete(s.used, c)
	return c, len(l) == 1, true
}

// acquire returns a child of class k for a call that holds a slot. As
// slots are no more than MaxChildren, it waits only for children that are
// starting.
func (s *Supervisor[K, C]) acquire(ctx context.Context, k K) (C, error) {
	var zero C
	for {
		s.mu.Lock()
		if s.closed {
			s.mu.Unlock()
			return zero, ErrClosed
		}
		if c, last, ok := s.takeIdleLocked(k); ok {
			s.mu.Unlock()
			if last && s.cfg.Spares {
				s.spare(k)
			}
			return c, nil
		}
		if s.alive >= s.cfg.MaxChildren {
			victim, ok := zero, false
			if s.pending[k] == 0 {
				// Wait for a spare of this class rather than kill
				// another class's idle child for one.
				victim, ok = s.evictLocked()
			}
			if !ok {
				changed := s.changed
				s.mu.Unlock()
				select {
				case <-changed:
					continue
				case <-ctx.Done():
					return zero, fmt.Errorf("%w: all %d %s stayed busy until the caller's context ended (%v); the function did not run: retry later",
						ErrBusy, s.cfg.MaxChildren, s.cfg.Noun, context.Cause(ctx))
				}
			}
			// The victim's slot is this call's.
			delete(s.all, victim)
			victim.Kill()
		} else {
			s.alive++
		}
		s.mu.Unlock()
		return s.startFor(ctx, k)
	}
}

// taken returns the child the call got: one handed over, or its own once
// its start ended (with t.err). Called with the Supervisor's mutex held.
func (t *startTicket[C]) taken() (C, bool) {
	select {
	case <-t.handoff:
		t.err = nil
		return t.handed, true
	default:
	}
	select {
	case <-t.ready:
		return t.c, true
	default:
		var zero C
		return zero, false
	}
}

// unstartLocked removes t from the calls waiting in startFor.
func (s *Supervisor[K, C]) unstartLocked(k K, t *startTicket[C]) {
	w := s.starting[k]
	if i := slices.Index(w, t); i >= 0 {
		s.starting[k] = slices.Delete(w, i, i+1)
	}
	if len(s.starting[k]) == 0 {
		delete(s.starting, k)
	}
}

// startTicket is a call's claim on the child it started (startFor).
type startTicket[C Child] struct {
	ready chan struct{} // closed when the start ended, with c or err
	c     C
	err   error
	// handoff is closed when Release gave the call handed, a child
	// another call released.
	handoff chan struct{}
	handed  C
	// gone: the call took another child or left; the one it started
	// goes idle, for the next call.
	gone bool
}

// startFor starts a child of k for a call, in a slot already counted in
// alive, in the background, and returns the first child of k ready for
// the call: the one it started, or one that another call released before
// that start ended (Release gives it to the call waiting longest), and the
// one it started then goes idle when it is ready. A burst of
// calls thus waits for the calls ahead of it rather than for process
// starts (docs/RATIONALE.md, "Why does a call not wait for its own
// process?").
func (s *Supervisor[K, C]) startFor(ctx context.Context, k K) (C, error) {
	var zero C
	t := &startTicket[C]{ready: make(chan struct{}), handoff: make(chan struct{})}
	s.mu.Lock()
	s.pending[k]++
	s.starting[k] = append(s.starting[k], t)
	s.mu.Unlock()
	defer func() {
		s.mu.Lock()
		s.unstartLocked(k, t)
		s.mu.Unlock()
	}()
	started := s.Track(func() {
		c, err := s.start(s.ctx, k)
		s.mu.Lock()
		if s.pending[k]--; s.pending[k] == 0 {
			delete(s.pending, k)
		}
		s.notifyLocked()
		t.c, t.err = c, err
		close(t.ready)
		gone := t.gone
		if !gone {
			// The call's own: no released child may go to it now.
			s.unstartLocked(k, t)
		}
		s.mu.Unlock()
		switch {
		case gone && err == nil:
			s.Release(c)
		case gone && s.ctx.Err() == nil:
			s.log.Error("cannot start a child", "children", s.cfg.Noun, "error", err)
		}
	})
	if !started {
		s.mu.Lock()
		if s.pending[k]--; s.pending[k] == 0 {
			delete(s.pending, k)
		}
		s.alive--
		s.notifyLocked()
		s.mu.Unlock()
		return zero, ErrClosed
	}
	for {
		s.mu.Lock()
		// A child handed over, or else the call's own start ended: one
		// excludes the other (Release, the start's goroutine).
		if c, ok := t.taken(); ok {
			s.mu.Unlock()
			return c, t.err
		}
		if s.closed {
			t.gone = true
			s.unstartLocked(k, t)
			s.mu.Unlock()
			return zero, ErrClosed
		}
		if c, _, ok := s.takeIdleLocked(k); ok {
			t.gone = true
			s.unstartLocked(k, t)
			s.mu.Unlock()
			return c, nil
		}
		changed := s.changed
		s.mu.Unlock()
		select {
		case <-changed:
		case <-t.ready:
		case <-t.handoff:
		case <-ctx.Done():
			s.mu.Lock()
			if c, ok := t.taken(); ok && t.err == nil {
				defer s.Release(c)
			}
			t.gone = true
			s.unstartLocked(k, t)
			s.mu.Unlock()
			return zero, fmt.Errorf("%w: no %s could start in time (%v); the function did not run", ErrBusy, s.cfg.Noun, context.Cause(ctx))
		}
	}
}

// evictLocked removes and returns the idle child, of any class, released
// longest ago.
func (s *Supervisor[K, C]) evictLocked() (C, bool) {
	var victim C
	var class K
	found := false
	for k, l := range s.idle {
		// Each class's list is in the order of release: its first is its
		// oldest.
		if len(l) > 0 && (!found || s.used[l[0]] < s.used[victim]) {
			victim, class, found = l[0], k, true
		}
	}
	if found {
		s.idle[class] = s.idle[class][1:]
		if len(s.idle[class]) == 0 {
			delete(s.idle, class)
		}
		delete(s.used, victim)
	}
	return victim, found
}

// reserve counts a child about to start, if there is room.
func (s *Supervisor[K, C]) reserve() bool {
	s.mu.Lock()
	defer s.mu.Unlock()
	if s.closed || s.alive >= s.cfg.MaxChildren {
		return false
	}
	s.alive++
	return true
}

// start starts a child of k in a slot already counted in alive; on failure
// it gives the slot back.
func (s *Supervisor[K, C]) start(ctx context.Context, k K) (C, error) {
	ctx, cancel := context.WithCancel(ctx)
	defer cancel()
	stop := context.AfterFunc(s.ctx, cancel)
	defer stop()
	c, err := s.cfg.Start(ctx, k)
	s.mu.Lock()
	defer s.mu.Unlock()
	if err == nil && s.closed {
		c.Kill()
		err = ErrClosed
	}
	if err != nil {
		s.alive--
		s.notifyLocked()
		var zero C
		return zero, err
	}
	s.started.Add(1)
	s.all[c] = k
	return c, nil
}

// spare starts a child of k in the background, if there is room.
func (s *Supervisor[K, C]) spare(k K) {
	s.mu.Lock()
	if s.closed || s.alive >= s.cfg.MaxChildren {
		s.mu.Unlock()
		return
	}
	// The slot and the pending start together: a call that saw the slot
	// taken but no start of its class pending would evict another class's
	// idle child for one (acquire).
	s.alive++
	s.pending[k]++
	s.mu.Unlock()
	done := func() {
		s.mu.Lock()
		if s.pending[k]--; s.pending[k] == 0 {
			delete(s.pending, k)
		}
		// A call may wait for this start (acquire): if it failed, that
		// call must look again.
		s.notifyLocked()
		s.mu.Unlock()
	}
	started := s.Track(func() {
		c, err := s.start(s.ctx, k)
		switch {
		case err == nil:
			// Idle before it stops counting as pending: in between, a
			// call of k would find neither and evict another class's.
			s.Release(c)
		case s.ctx.Err() == nil:
			s.log.Error("cannot start a spare", "children", s.cfg.Noun, "error", err)
		}
		done()
	})
	if !started {
		done()
		s.mu.Lock()
		s.alive--
		s.mu.Unlock()
	}
}

// PerTenant is how many children one tenant may hold at once.
func (s *Supervisor[K, C]) PerTenant() int { return s.fair.PerTenant() }

// Release gives back a healthy child, to serve its class's next call, and
// the slot of the call it served.
func (s *Supervisor[K, C]) Release(c C) {
	s.mu.Lock()
	tenant, held := s.holder[c]
	delete(s.holder, c)
	k, ok := s.all[c]
	switch w := s.starting[k]; {
	case s.closed || !ok:
		c.Kill()
	case len(w) > 0:
		// The call waiting longest for a child of this class gets it
		// (startFor), before any call that comes later.
		t := w[0]
		s.starting[k] = w[1:]
		t.gone, t.handed = true, c
		close(t.handoff)
	default:
		s.idle[k] = append(s.idle[k], c)
		s.uses++
		s.used[c] = s.uses
		s.notifyLocked()
	}
	s.mu.Unlock()
	if held {
		s.fair.Release(tenant)
	}
}

// Discard kills a child that must not serve again, gives back the slot of
// the call it served, and with SupervisorConfig.Replace starts another of
// its class in its place.
func (s *Supervisor[K, C]) Discard(c C) {
	c.Kill()
	s.mu.Lock()
	tenant, held := s.holder[c]
	delete(s.holder, c)
	k, ok := s.all[c]
	if ok {
		delete(s.all, c)
		s.alive--
		s.discarded.Add(1)
		s.notifyLocked()
	}
	s.mu.Unlock()
	// Calls waiting for a slot start their own children: a replacement
	// would take the room one of them may need for another class.
	if ok && s.cfg.Replace && !s.fair.Waiting() {
		s.spare(k)
	}
	if held {
		s.fair.Release(tenant)
	}
}

// Track runs f on a goroutine that Close waits for, unless the Supervisor
// is closed: then it reports false and does not run f.
func (s *Supervisor[K, C]) Track(f func()) bool {
	s.mu.Lock()
	defer s.mu.Unlock()
	if s.closed {
		return false
	}
	s.wg.Go(f)
	return true
}

// Done is closed when the Supervisor closes.
func (s *Supervisor[K, C]) Done() <-chan struct{} { return s.ctx.Done() }

// Close kills every child, idle or serving a call, and waits for them and
// every goroutine Track runs.
func (s *Supervisor[K, C]) Close() {
	s.mu.Lock()
	if s.closed {
		s.mu.Unlock()
		return
	}
	s.closed = true
	all := slices.Collect(maps.Keys(s.all))
	s.idle = map[K][]C{}
	s.used = map[C]uint64{}
	s.notifyLocked()
	s.mu.Unlock()
	s.fair.Close()
	s.cancel()
	for _, c := range all {
		c.Kill()
	}
	s.wg.Wait()
}

// Children returns the children started and not discarded, idle or
// serving a call.
func (s *Supervisor[K, C]) Children() []C {
	s.mu.Lock()
	defer s.mu.Unlock()
	return slices.Collect(maps.Keys(s.all))
}

// Busy returns the children serving a call.
func (s *Supervisor[K, C]) Busy() []C {
	s.mu.Lock()
	defer s.mu.Unlock()
	idle := map[C]bool{}
	for _, l := range s.idle {
		for _, c := range l {
			idle[c] = true
		}
	}
	var busy []C
	for c := range s.all {
		if !idle[c] {
			busy = append(busy, c)
		}
	}
	return busy
}

// Stats returns the Supervisor's counts.
func (s *Supervisor[K, C]) Stats() SupervisorStats {
	s.mu.Lock()
	defer s.mu.Unlock()
	st := SupervisorStats{Alive: s.alive, Started: s.started.Load(), Discarded: s.discarded.Load(), Waiting: s.fair.Stats().Waiting}
	for _, l := range s.idle {
		st.Idle += len(l)
	}
	return st
}

// Discarded is Stats().Discarded, without the lock.
func (s *Supervisor[K, C]) Discarded() uint64 { return s.discarded.Load() }

// Held returns the children the calls of tenant hold.
func (s *Supervisor[K, C]) Held(tenant string) int { return s.fair.Held(tenant) }

// notifyLocked wakes the calls waiting for a child.
func (s *Supervisor[K, C]) notifyLocked() {
	close(s.changed)
	s.changed = make(chan struct{})
}
