package childproc

import (
	"context"
	"errors"
	"fmt"
	"math/rand/v2"
	"runtime"
	"strings"
	"sync/atomic"
	"testing"
	"time"
)

// call is one Acquire running in the background, for the tests.
type call struct {
	tenant string
	cancel context.CancelFunc
	done   chan error
	ok     atomic.Bool // Acquire returned nil
}

// calls runs the tests' Acquires against one queue. Its tests release
// slots from one goroutine, so a call granted a slot has its Acquire
// return nil, and settle can wait for that.
type calls struct {
	q        *FairQueue
	returned atomic.Uint64 // Acquires that returned nil
}

// arrive starts an Acquire for tenant and returns once it holds a slot or
// waits in the queue.
func (cs *calls) arrive(t *testing.T, tenant string) *call {
	t.Helper()
	ctx, cancel := context.WithCancel(context.Background())
	c := &call{tenant: tenant, cancel: cancel, done: make(chan error, 1)}
	before := cs.q.Stats()
	go func() {
		err := cs.q.Acquire(ctx, tenant)
		if err == nil {
			c.ok.Store(true)
			cs.returned.Add(1)
		}
		c.done <- err
	}()
	for {
		st := cs.q.Stats()
		if st.Granted > before.Granted || st.Waiting > before.Waiting {
			cs.settle()
			return c
		}
		time.Sleep(10 * time.Microsecond)
	}
}

// settle waits until every call granted a slot has seen it.
func (cs *calls) settle() {
	for cs.returned.Load() != cs.q.Stats().Granted {
		time.Sleep(10 * time.Microsecond)
	}
}

// release ends a call that holds a slot.
func (cs *calls) release(c *call) {
	cs.q.Release(c.tenant)
	cs.settle()
}

// holders returns the slots each tenant holds.
func holders(q *FairQueue) map[string]int {
	q.mu.Lock()
	defer q.mu.Unlock()
	m := map[string]int{}
	for name, t := range q.tenants {
		if t.held > 0 {
			m[name] = t.held
		}
	}
	return m
}

// checkInvariants checks what must hold after every operation: slots add
// up, no tenant over its cap, and no slot free while a call that may take
// it waits.
func checkInvariants(t *testing.T, q *FairQueue) {
	t.Helper()
	q.mu.Lock()
	defer q.mu.Unlock()
	held, waiting := 0, 0
	for name, tn := range q.tenants {
		held += tn.held
		waiting += len(tn.waiting)
		if tn.held > q.cfg.PerTenant {
			t.Fatalf("tenant %q holds %d slots, over its cap of %d", name, tn.held, q.cfg.PerTenant)
		}
		if q.free > 0 && len(tn.waiting) > 0 && tn.held < q.cfg.PerTenant {
			t.Fatalf("tenant %q waits under its cap (%d < %d) while %d slots are free", name, tn.held, q.cfg.PerTenant, q.free)
		}
		if tn.held == 0 && len(tn.waiting) == 0 {
			t.Fatalf("tenant %q is kept with no calls", name)
		}
	}
	if held+q.free != q.cfg.Slots {
		t.Fatalf("%d held + %d free != %d slots", held, q.free, q.cfg.Slots)
	}
	if waiting != q.stats.Waiting {
		t.Fatalf("%d calls queued, stats say %d", waiting, q.stats.Waiting)
	}
}

func TestFairQueue(t *testing.T) {
	// Each step is "+t" (a call of t arrives), "-t" (one of t's calls that
	// holds a slot finishes); want is who holds slots after the steps.
	tests := []struct {
		name      string
		slots     int
		perTenant int
		steps     string
		want      map[string]int
	}{
		{"under capacity everyone runs", 4, 0, "+a +b +c", map[string]int{"a": 1, "b": 1, "c": 1}},
		{"a cap of all but one leaves one slot", 4, 3, "+a +a +a +a +a", map[string]int{"a": 3}},
		{"the last slot goes to another tenant", 4, 3, "+a +a +a +a +b", map[string]int{"a": 3, "b": 1}},
		{"a freed slot goes to the tenant holding fewest", 4, 3, "+a +a +a +b +a +a +c -a", map[string]int{"a": 2, "b": 1, "c": 1}},
		{"equal holders alternate", 2, 2, "+a +a +a +b +b -a -a", map[string]int{"a": 1, "b": 1}},
		{"one slot is shared in turn", 1, 0, "+a +a +b +c -a -b", map[string]int{"c": 1}},
		{"a cap of all slots lets one tenant take them", 3, 3, "+a +a +a +b", map[string]int{"a": 3}},
		{"a tenant's own calls are served in order", 2, 1, "+a +b +a +a -a", map[string]int{"a": 1, "b": 1}},
		{"the empty tenant is a tenant", 2, 1, "+ + +b", map[string]int{"": 1, "b": 1}},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			q := NewFairQueue(FairConfig{Slots: tt.slots, PerTenant: tt.perTenant})
			cs := &calls{q: q}
			calls := map[string][]*call{}
			for _, step := range strings.Fields(tt.steps) {
				tenant := step[1:]
				switch step[0] {
				case '+':
					calls[tenant] = append(calls[tenant], cs.arrive(t, tenant))
				case '-':
					i := 0
					for !calls[tenant][i].ok.Load() {
						i++
					}
					cs.release(calls[tenant][i])
					calls[tenant] = append(calls[tenant][:i:i], calls[tenant][i+1:]...)
				}
				checkInvariants(t, q)
			}
			if got := holders(q); fmt.Sprint(got) != fmt.Sprint(tt.want) {
				t.Fatalf("holders %v, want %v", got, tt.want)
			}
			for _, l := range calls {
				for _, c := range l {
					c.cancel()
				}
			}
		})
	}
}

// TestFairQueueProperties runs random arrivals, finishes and cancels and
// checks, at each step, the invariants, and at each grant that the slot
// went to the waiting tenant that held the fewest.
func TestFairQueueProperties(t *testing.T) {
	seed := uint64(time.Now().UnixNano())
	t.Logf("seed %d", seed)
	rng := rand.New(rand.NewPCG(seed, 1))
	for round := range 40 {
		slots := 1 + rng.IntN(8)
		q := NewFairQueue(FairConfig{Slots: slots, PerTenant: rng.IntN(slots + 1)})
		cs := &calls{q: q}
		tenants := []string{"a", "b", "c", "d", "e"}[:2+rng.IntN(4)]
		var live []*call
		for range 150 {
			switch op := rng.IntN(10); {
			case op < 5: // arrive
				live = append(live, cs.arrive(t, tenants[rng.IntN(len(tenants))]))
			case op < 9: // a running call finishes
				var running []int
				for i, c := range live {
					if c.ok.Load() {
						running = append(running, i)
					}
				}
				if len(running) == 0 {
					continue
				}
				i := running[rng.IntN(len(running))]
				want := nextTenant(q, live[i].tenant)
				before := holders(q)
				cs.release(live[i])
				before[live[i].tenant]--
				live = append(live[:i:i], live[i+1:]...)
				if after := holders(q); want != nil && after[*want] != before[*want]+1 {
					t.Fatalf("round %d: the freed slot should have gone to %q (fewest held among waiting): before %v, after %v", round, *want, before, after)
				}
			default: // a waiting call gives up
				for i, c := range live {
					if !c.ok.Load() {
						c.cancel()
						if err := <-c.done; !errors.Is(err, ErrBusy) {
							t.Fatalf("a waiting call that gave up: %v, want ErrBusy", err)
						}
						live = append(live[:i:i], live[i+1:]...)
						break
					}
				}
			}
			checkInvariants(t, q)
		}
		for _, c := range live {
			c.cancel()
		}
	}
}

// nextTenant is who the rule says gets the slot releasing frees: the
// waiting tenant under its cap that holds the fewest, then the one served
// longest ago, then the one waiting longest; nil if none.
func nextTenant(q *FairQueue, releasing string) *string {
	q.mu.Lock()
	defer q.mu.Unlock()
	var best *tenantState
	bestHeld := 0
	for _, tn := range q.tenants {
		held := tn.held
		if tn.name == releasing {
			held--
		}
		if len(tn.waiting) == 0 || held >= q.cfg.PerTenant {
			continue
		}
		if best == nil || held < bestHeld || held == bestHeld && (tn.lastServed < best.lastServed ||
			tn.lastServed == best.lastServed && tn.waiting[0].seq < best.waiting[0].seq) {
			best, bestHeld = tn, held
		}
	}
	if best == nil {
		return nil
	}
	return &best.name
}

// TestFairQueueSharesConverge floods the queue from one tenant, then from
// others, and checks that, as calls finish, the slots come to be shared
// equally: once every tenant has seen its calls finish, no backlogged
// tenant holds more than one slot more than another.
func TestFairQueueSharesConverge(t *testing.T) {
	for _, tt := range []struct {
		slots   int
		tenants []string
	}{
		{8, []string{"a", "b"}},
		{8, []string{"a", "b", "c"}},
		{7, []string{"a", "b", "c", "d"}},
		{3, []string{"a", "b", "c", "d", "e"}},
	} {
		t.Run(fmt.Sprintf("%d slots %d tenants", tt.slots, len(tt.tenants)), func(t *testing.T) {
			q := NewFairQueue(FairConfig{Slots: tt.slots, PerTenant: tt.slots - 1})
			cs := &calls{q: q}
			var live []*call
			defer func() {
				for _, c := range live {
					c.cancel()
				}
			}()
			// The first tenant floods alone, and takes all it may.
			for range 2 * tt.slots {
				live = append(live, cs.arrive(t, tt.tenants[0]))
			}
			for _, tenant := range tt.tenants[1:] {
				for range 2 * tt.slots {
					live = append(live, cs.arrive(t, tenant))
				}
			}
			rng := rand.New(rand.NewPCG(uint64(tt.slots), uint64(len(tt.tenants))))
			for range 4 * tt.slots {
				var running []int
				for i, c := range live {
					if c.ok.Load() {
						running = append(running, i)
					}
				}
				i := running[rng.IntN(len(running))]
				c := live[i]
				cs.release(c)
				live = append(live[:i:i], live[i+1:]...)
				live = append(live, cs.arrive(t, c.tenant)) // still backlogged
				checkInvariants(t, q)
			}
			h := holders(q)
			lo, hi := tt.slots, 0
			for _, tenant := range tt.tenants {
				lo, hi = min(lo, h[tenant]), max(hi, h[tenant])
			}
			if hi-lo > 1 {
				t.Fatalf("backlogged tenants hold %v: unequal by %d", h, hi-lo)
			}
		})
	}
}

func TestFairQueueErrors(t *testing.T) {
	q := NewFairQueue(FairConfig{Slots: 2, Noun: "Starlark processes"})
	ctx := context.Background()
	if err := q.Acquire(ctx, "a"); err != nil {
		t.Fatal(err)
	}
	short, cancel := context.WithTimeout(ctx, 20*time.Millisecond)
	defer cancel()
	err := q.Acquire(short, "a")
	if !errors.Is(err, ErrTenantCap) || !errors.Is(err, ErrBusy) || GRPCCode(err) != KindExhausted.Code() {
		t.Fatalf("a call over its tenant's cap: %v", err)
	}
	if !strings.Contains(err.Error(), "1 of 2 Starlark processes") {
		t.Fatalf("the message does not say what the user holds: %v", err)
	}
	if err := q.Acquire(ctx, "b"); err != nil {
		t.Fatalf("another tenant's call: %v", err)
	}
	short, cancel = context.WithTimeout(ctx, 20*time.Millisecond)
	defer cancel()
	if err := q.Acquire(short, "c"); !errors.Is(err, ErrBusy) || errors.Is(err, ErrTenantCap) {
		t.Fatalf("a call with every slot taken: %v", err)
	}
	if st := q.Stats(); st.Held != 2 || st.Waiting != 0 || st.Expired != 2 {
		t.Fatalf("stats %+v", st)
	}
	waiting := make(chan error)
	go func() { waiting <- q.Acquire(ctx, "c") }()
	for !q.Waiting() {
		time.Sleep(time.Millisecond)
	}
	q.Close()
	if err := <-waiting; !errors.Is(err, ErrClosed) {
		t.Fatalf("a call waiting at Close: %v", err)
	}
	if err := q.Acquire(ctx, "d"); !errors.Is(err, ErrClosed) {
		t.Fatalf("a call after Close: %v", err)
	}
}

func TestFairQueueWeights(t *testing.T) {
	q := NewFairQueue(FairConfig{Slots: 6, PerTenant: 6, Weight: func(tenant string) int {
		if tenant == "heavy" {
			return 2
		}
		return 1
	}})
	cs := &calls{q: q}
	var live []*call
	defer func() {
		for _, c := range live {
			c.cancel()
		}
	}()
	for range 6 {
		live = append(live, cs.arrive(t, "light"))
	}
	for range 6 {
		live = append(live, cs.arrive(t, "heavy"))
	}
	// Every light call finishes in turn: the slots go two to one.
	for range 6 {
		for i, c := range live {
			if c.ok.Load() && c.tenant == "light" {
				cs.release(c)
				live = append(live[:i:i], live[i+1:]...)
				live = append(live, cs.arrive(t, "light"))
				break
			}
		}
	}
	if h := holders(q); h["heavy"] != 4 || h["light"] != 2 {
		t.Fatalf("holders %v, want heavy 4 and light 2", h)
	}
}

func TestDefaultPerTenant(t *testing.T) {
	defer runtime.GOMAXPROCS(runtime.GOMAXPROCS(0))
	for _, tt := range []struct{ slots, cpus, want int }{
		{1, 4, 1},  // one slot: it is shared in turn
		{2, 4, 1},  // all but one
		{8, 16, 7}, // all but one
		{8, 2, 2},  // no more than the CPUs
		{8, 1, 1},
	} {
		runtime.GOMAXPROCS(tt.cpus)
		if got := DefaultPerTenant(tt.slots); got != tt.want {
			t.Errorf("DefaultPerTenant(%d) with %d CPUs = %d, want %d", tt.slots, tt.cpus, got, tt.want)
		}
	}
}
