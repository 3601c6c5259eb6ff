package childproc

import (
	"context"
	"fmt"
	"runtime"
	"sync"
)

// FairQueue hands out a fixed number of slots to the calls of many tenants
// (the users calling): a call takes a slot with Acquire and gives it back
// with Release. No tenant holds more than PerTenant slots; when slots are
// short, a slot that frees goes to the waiting tenant that holds the fewest
// (weighted), and among those to the one served longest ago, and within a
// tenant to its oldest call. So a tenant that floods the queue delays its own
// calls, not others' (docs/RATIONALE.md, "Why fewest-held-first fair
// queuing?").
//
// It is safe for concurrent use.
type FairQueue struct {
	cfg FairConfig

	mu      sync.Mutex
	closed  bool
	free    int
	tenants map[string]*tenantState
	serial  uint64 // counts grants, to order tenants by when they were last served
	arrived uint64 // counts calls that waited, to order them by arrival
	stats   FairStats
}

// FairConfig configures a FairQueue.
type FairConfig struct {
	// Slots is how many calls may hold a slot at once. Required.
	Slots int
	// PerTenant bounds the slots one tenant holds at once. Zero: the
	// default, DefaultPerTenant(Slots), which leaves room for another
	// tenant's call however long one tenant's calls run, and CPU time.
	PerTenant int
	// Weight is a tenant's weight, at least 1: a tenant of weight 2 is
	// served as if it held half the slots it holds. Nil: 1 for everyone.
	// PerTenant bounds every tenant whatever its weight.
	Weight func(tenant string) int
	// Noun names the slots in messages: "Starlark processes".
	Noun string
}

// DefaultPerTenant is the per-tenant cap a FairQueue of n slots has unless
// told otherwise: all but one slot, so that one tenant's calls, however many
// and however long, always leave one for the others; and no more than the
// CPUs the process may use (GOMAXPROCS), as function code computes (it has
// no I/O but its host calls), so that more calls of one tenant than CPUs buy
// it no throughput and only slow every other call (docs/RATIONALE.md, "Why
// fewest-held-first fair queuing?", has the figures).
func DefaultPerTenant(n int) int { return max(1, min(n-1, runtime.GOMAXPROCS(0))) }

// FairStats counts a FairQueue's grants and waits.
type FairStats struct {
	Held    int    // slots held now
	Waiting int    // calls waiting now
	Granted uint64 // slots granted, at once or after a wait
	Waited  uint64 // of those, the calls that waited
	Expired uint64 // calls whose context ended while they waited
}

type tenantState struct {
	name       string
	held       int
	waiting    []*fairWaiter // first in, first out
	lastServed uint64
}

type fairWaiter struct {
	seq     uint64        // arrival order
	granted chan struct{} // closed when the slot is the waiter's
	done    bool          // granted (and so out of the queue)
}

// ErrTenantCap wraps ErrBusy when a call waited because its tenant already
// held every slot it may hold.
var ErrTenantCap = fmt.Errorf("%w: this user's calls hold every slot one user may hold", ErrBusy)

// NewFairQueue returns a FairQueue with every slot free. It panics on a
// configuration no caller should make (no slots).
func NewFairQueue(cfg FairConfig) *FairQueue {
	if cfg.Slots <= 0 {
		panic(fmt.Sprintf("childproc: a FairQueue needs slots, not %d", cfg.Slots))
	}
	if cfg.PerTenant <= 0 {
		cfg.PerTenant = DefaultPerTenant(cfg.Slots)
	}
	cfg.PerTenant = min(cfg.PerTenant, cfg.Slots)
	if cfg.Noun == "" {
		cfg.Noun = "slots"
	}
	return &FairQueue{cfg: cfg, free: cfg.Slots, tenants: map[string]*tenantState{}}
}

// Acquire takes a slot for tenant, waiting for one until ctx ends. Its
// error wraps ErrBusy (or ErrTenantCap) with what the call waited for, or
// is ErrClosed.
func (q *FairQueue) Acquire(ctx context.Context, tenant string) error {
	q.mu.Lock()
	if q.closed {
		q.mu.Unlock()
		return ErrClosed
	}
	t := q.tenant(tenant)
	if q.free > 0 && t.held < q.cfg.PerTenant && len(t.waiting) == 0 {
		// Nobody eligible waits (dispatch would have served them), so
		// this call is next.
		q.grantLocked(t)
		q.mu.Unlock()
		return nil
	}
	q.arrived++
	w := &fairWaiter{seq: q.arrived, granted: make(chan struct{})}
	t.waiting = append(t.waiting, w)
	q.stats.Waiting++
	q.mu.Unlock()

	select {
	case <-w.granted:
		q.mu.Lock()
		defer q.mu.Unlock()
		if q.closed && !w.done {
			return ErrClosed
		}
		return nil
	case <-ctx.Done():
	}
	q.mu.Lock()
	defer q.mu.Unlock()
	if w.done {
		// Granted as the context ended: the caller gives up, the slot
		// goes to the next.
		q.releaseLocked(tenant)
	} else if !q.closed {
		t.waiting = deleteWaiter(t.waiting, w)
		q.stats.Waiting--
		q.forgetLocked(tenant, t)
	}
	if q.closed {
		return ErrClosed
	}
	q.stats.Expired++
	if t.held >= q.cfg.PerTenant {
		return fmt.Errorf("%w (%d of %d %s) until the caller's context ended (%v); the function did not run: wait for them to finish, or spread them out",
			ErrTenantCap, t.held, q.cfg.Slots, q.cfg.Noun, context.Cause(ctx))
	}
	return fmt.Errorf("%w: all %d %s stayed busy until the caller's context ended (%v); the function did not run: retry later",
		ErrBusy, q.cfg.Slots, q.cfg.Noun, context.Cause(ctx))
}

// PerTenant is how many slots one tenant may hold at once.
func (q *FairQueue) PerTenant() int { return q.cfg.PerTenant }

// Release gives back a slot tenant holds.
func (q *FairQueue) Release(tenant string) {
	q.mu.Lock()
	defer q.mu.Unlock()
	q.releaseLocked(tenant)
}

// Waiting reports whether calls wait for a slot.
func (q *FairQueue) Waiting() bool {
	q.mu.Lock()
	defer q.mu.Unlock()
	return q.stats.Waiting > 0
}

// Held returns the slots tenant holds.
func (q *FairQueue) Held(tenant string) int {
	q.mu.Lock()
	defer q.mu.Unlock()
	if t := q.tenants[tenant]; t != nil {
		return t.held
	}
	return 0
}

// Stats returns the queue's counts.
func (q *FairQueue) Stats() FairStats {
	q.mu.Lock()
	defer q.mu.Unlock()
	st := q.stats
	st.Held = q.cfg.Slots - q.free
	return st
}

// Close wakes every waiting call with ErrClosed and refuses new ones.
// Slots held stay held until released.
func (q *FairQueue) Close() {
	q.mu.Lock()
	defer q.mu.Unlock()
	if q.closed {
		return
	}
	q.closed = true
	for _, t := range q.tenants {
		for _, w := range t.waiting {
			close(w.granted)
		}
		t.waiting = nil
	}
	q.stats.Waiting = 0
}

func (q *FairQueue) tenant(name string) *tenantState {
	t := q.tenants[name]
	if t == nil {
		t = &tenantState{name: name}
		q.tenants[name] = t
	}
	return t
}

// forgetLocked drops a tenant that holds and waits for nothing, so that
// the map holds only tenants with calls.
func (q *FairQueue) forgetLocked(name string, t *tenantState) {
	if t.held == 0 && len(t.waiting) == 0 {
		delete(q.tenants, name)
	}
}

func (q *FairQueue) grantLocked(t *tenantState) {
	q.free--
	t.held++
	q.serial++
	t.lastServed = q.serial
	q.stats.Granted++
}

func (q *FairQueue) releaseLocked(name string) {
	t := q.tenants[name]
	if t == nil || t.held == 0 {
		panic(fmt.Sprintf("childproc: FairQueue.Release for tenant %q, which holds no slot", name))
	}
	t.held--
	q.free++
	q.dispatchLocked()
	q.forgetLocked(name, t)
}

// dispatchLocked gives free slots to waiting calls: each to the first call
// of the eligible tenant (waiting, under its cap) that holds the fewest
// slots for its weight, the one served longest ago among equals.
func (q *FairQueue) dispatchLocked() {
	if q.closed {
		return
	}
	for q.free > 0 {
		var best *tenantState
		for _, t := range q.tenants {
			if len(t.waiting) == 0 || t.held >= q.cfg.PerTenant {
				continue
			}
			if best == nil || q.before(t, best) {
				best = t
			}
		}
		if best == nil {
			return
		}
		w := best.waiting[0]
		best.waiting = best.waiting[1:]
		q.stats.Waiting--
		q.stats.Waited++
		q.grantLocked(best)
		w.done = true
		close(w.granted)
	}
}

// before reports whether waiting tenant a comes before waiting tenant b:
// fewer slots held per unit of weight (compared as held_a*weight_b <
// held_b*weight_a), then served longer ago (a tenant that had no calls for
// a while counts as never served), then waiting longer.
func (q *FairQueue) before(a, b *tenantState) bool {
	wa, wb := q.weightOf(a), q.weightOf(b)
	if x, y := a.held*wb, b.held*wa; x != y {
		return x < y
	}
	if a.lastServed != b.lastServed {
		return a.lastServed < b.lastServed
	}
	return a.waiting[0].seq < b.waiting[0].seq
}

func (q *FairQueue) weightOf(t *tenantState) int {
	if q.cfg.Weight == nil {
		return 1
	}
	return max(1, q.cfg.Weight(t.name))
}

func deleteWaiter(l []*fairWaiter, w *fairWaiter) []*fairWaiter {
	for i, x := range l {
		if x == w {
			return append(l[:i:i], l[i+1:]...)
		}
	}
	return l
}
