package sandbox

import (
	"context"
	"errors"
	"fmt"
	"slices"
	"sync/atomic"
	"time"

	"github.com/hivemind/taskworker/internal/childproc"
)

// Gate admits a call before it takes one of its function's instances: the
// worker's bound on the WebAssembly calls of all its functions running at
// once, shared fairly between callers (a childproc.FairQueue is one).
type Gate interface {
	Acquire(ctx context.Context, tenant string) error
	Release(tenant string)
}

// Batches. A caller may run as many calls of a function at once as the
// module's fair share allows it (and its gate's, if less): two on a 2-CPU
// worker. Its other calls wait, and a call's turn used to cost, besides the
// call, a pass through the gate and the module's queue, a write to the
// child, a wake-up of the child and one of the worker: with a Go guest,
// more than the guest's own work (docs/RATIONALE.md, "Why are a caller's
// waiting calls sent to a child in batches?"). Now the waiting calls queue
// here, per caller, and each turn sends up to maxBatch of them (at most
// maxBatchBytes of input together) to one child in one write; the child
// runs them in order and answers each as it ends.
//
// A batch holds one turn and one child, as one call did: the caller's
// calls get no more of the worker than before, and other callers' calls
// wait for no more than a batch of the caller's calls in each of its turns
// (calls of one function, which run a few tens of microseconds each when
// this matters). Each call keeps its own limits, counted from its start:
// the child is killed when the call it runs overruns, and the calls of the
// batch it had not started go back to the front of the queue. A call whose
// caller leaves while it waits in a batch still runs (its frame was sent),
// but its host requests fail and its result is dropped.
const (
	maxBatch      = 16
	maxBatchBytes = 32 * KiB // under the 64 KiB of a pipe's buffer: see childproc.CallBatch
	// maxBatchInput is the largest input that joins batches; a larger one
	// runs alone.
	maxBatchInput = 8 * KiB
)

// holdAnswers is how long after its last write a child may keep back the
// answers of a batch's calls that sent it nothing else, while it runs the
// calls behind them: their answers then go in one write, which wakes the
// worker once, whose replies then go to the pool together, rather than
// one write, one wake-up and one reply each (docs/RATIONALE.md, "Why does
// a child hold answers back?"). The time limits of a batch's calls are
// armed this much late (childproc.CallBatch): 5 ms, or a tenth of the
// function's time limit if less.
func holdAnswers(spec Spec) time.Duration { return min(5*time.Millisecond, spec.Timeout/10) }

// callerCalls is a caller's calls of a Module that go through batches.
type callerCalls struct {
	// turns counts the calls and drivers that hold or wait for one of the
	// caller's turns; at most Module.turns.
	turns   int
	waiting []*queued // first in, first out
}

// queued is a call waiting for a batch, or in one.
type queued struct {
	ctx   context.Context
	input []byte
	state atomic.Int32
	done  chan struct{} // closed once out and err are set
	out   []byte
	err   error
	// alone says the call runs in a batch of its own: it was in a batch
	// whose child ended while answers were held back, and may be the one
	// at fault (childproc.CallError.Alone).
	alone bool
}

// A queued call's states. It is in its caller's waiting list until a
// driver takes it into a batch.
const (
	queuedWaiting   = iota // waiting, or in a batch and not started
	queuedStarted          // the child runs it: its caller waits for its answer
	queuedAbandoned        // its caller left before it started
)

// end gives q its outcome.
func (q *queued) end(out []byte, err error) {
	q.out, q.err = out, err
	close(q.done)
}

// left reports whether q's caller left before q started: it did, or q's
// context has ended, which abandons q (ending it, for a caller that still
// waits, with notStarted).
func (q *queued) left() bool {
	if q.ctx.Err() != nil && q.state.CompareAndSwap(queuedWaiting, queuedAbandoned) {
		q.end(nil, notStarted(q.ctx))
	}
	return q.state.Load() == queuedAbandoned
}

// start marks q started, unless its caller left (left).
func (q *queued) start() bool {
	return !q.left() && q.state.CompareAndSwap(queuedWaiting, queuedStarted)
}

// turns is how many calls of one caller may run at once: the module's
// fair share, and gate's if it says and is less.
func (m *Module) turns(gate Gate) int {
	n := m.sup.PerTenant()
	if g, ok := gate.(interface{ PerTenant() int }); ok {
		n = min(n, g.PerTenant())
	}
	return max(n, 1)
}

// callBatched runs a call at once if the caller has a turn free, or else
// queues it for the next batch and waits for its answer.
func (m *Module) callBatched(ctx context.Context, gate Gate, caller string, input []byte) ([]byte, error) {
	limit := m.turns(gate)
	m.bmu.Lock()
	if m.callers == nil {
		m.callers = map[string]*callerCalls{}
	}
	cs := m.callers[caller]
	if cs == nil {
		cs = &callerCalls{}
		m.callers[caller] = cs
	}
	if cs.turns < limit && len(cs.waiting) == 0 {
		cs.turns++
		m.bmu.Unlock()
		out, err := m.callAlone(ctx, gate, caller, input)
		m.turnDone(gate, caller)
		return out, err
	}
	q := &queued{ctx: ctx, input: input, done: make(chan struct{})}
	cs.waiting = append(cs.waiting, q)
	if cs.turns < limit {
		cs.turns++
		m.startDriver(gate, caller)
	}
	m.bmu.Unlock()
	select {
	case <-q.done:
		return q.out, q.err
	case <-ctx.Done():
	}
	m.bmu.Lock()
	if i := slices.Index(cs.waiting, q); i >= 0 {
		cs.waiting = slices.Delete(cs.waiting, i, i+1)
		m.bmu.Unlock()
		return nil, fmt.Errorf("%w (%d calls of this function) until the caller's context ended (%v); the function did not run: wait for them to finish, or spread them out",
			childproc.ErrTenantCap, limit, context.Cause(ctx))
	}
	m.bmu.Unlock()
	if q.state.CompareAndSwap(queuedWaiting, queuedAbandoned) {
		return nil, notStarted(ctx)
	}
	// It runs: its kill at the caller's deadline ends it at once.
	<-q.done
	return q.out, q.err
}

// turnDone ends one of caller's turns; if calls wait, a driver takes it
// over.
func (m *Module) turnDone(gate Gate, caller string) {
	m.bmu.Lock()
	defer m.bmu.Unlock()
	if cs := m.callers[caller]; len(cs.waiting) > 0 {
		m.startDriver(gate, caller) // the turn is the driver's
	} else {
		m.endTurnLocked(caller, cs)
	}
}

// endTurnLocked ends one of caller's turns, none of its calls waiting;
// m.bmu is held.
func (m *Module) endTurnLocked(caller string, cs *callerCalls) {
	if cs.turns--; cs.turns == 0 {
		delete(m.callers, caller)
	}
}

// startDriver starts a goroutine that sends caller's waiting calls to
// children in batches, in turns, until none waits; m.bmu is held and the
// driver's turn counted.
func (m *Module) startDriver(gate Gate, caller string) {
	m.drivers.Add(1)
	go func() {
		defer m.drivers.Done()
		m.drive(gate, caller)
	}()
}

func (m *Module) drive(gate Gate, caller string) {
	for {
		m.bmu.Lock()
		cs := m.callers[caller]
		if len(cs.waiting) == 0 {
			m.endTurnLocked(caller, cs)
			m.bmu.Unlock()
			return
		}
		head := cs.waiting[0]
		m.bmu.Unlock()
		// The turn is taken for the oldest waiting call, under its
		// context: when that ends first, the call fails as it would
		// have waiting for its own turn, and the next one's is taken.
		r, err := m.turn(head.ctx, gate, caller)
		if err != nil {
			m.bmu.Lock()
			if i := slices.Index(cs.waiting, head); i >= 0 {
				cs.waiting = slices.Delete(cs.waiting, i, i+1)
				head.end(nil, err)
			}
			m.bmu.Unlock()
			continue
		}
		m.runBatch(cs, r, m.takeBatch(cs))
		if gate != nil {
			gate.Release(caller)
		}
	}
}

// takeBatch takes the calls of the next batch from the front of cs's
// waiting list; the first is one whose caller still waits for it.
func (m *Module) takeBatch(cs *callerCalls) []*queued {
	m.bmu.Lock()
	defer m.bmu.Unlock()
	if len(cs.waiting) == 0 { // they left while the turn was taken
		return nil
	}
	// The first call, and those behind it that fit, up to a call that
	// must run alone; one that must run alone is a batch of its own.
	n, bytes := 1, len(cs.waiting[0].input)
	for !cs.waiting[0].alone && n < len(cs.waiting) && n < maxBatch && !cs.waiting[n].alone {
		if bytes += len(cs.waiting[n].input); bytes > maxBatchBytes {
			break
		}
		n++
	}
	batch := slices.Clone(cs.waiting[:n])
	cs.waiting = slices.Delete(cs.waiting, 0, n)
	return batch
}

// runBatch runs batch, calls of cs, on r, gives each call its answer as
// it comes, and gives r back. Calls the child never started go back to
// the front of cs's queue.
func (m *Module) runBatch(cs *callerCalls, r runner, batch []*queued) {
	// A call whose caller has left, or whose context has ended, before
	// the batch is sent is not sent. The first call starts at once.
	batch = slices.DeleteFunc(batch, (*queued).left)
	for len(batch) > 0 && !batch[0].start() {
		batch = batch[1:] // abandoned just now
	}
	if len(batch) == 0 {
		m.sup.Release(r)
		return
	}
	m.running.Add(int32(len(batch)))
	var again []*queued
	ended := func(q *queued, out []byte, err error) {
		m.running.Add(-1)
		switch state := q.state.Load(); {
		case retry(err) && state != queuedAbandoned:
			q.state.Store(queuedWaiting)
			var ce *childproc.CallError
			q.alone = q.alone || errors.As(err, &ce) && ce.Alone()
			again = append(again, q)
		case state == queuedStarted:
			m.calls.Add(1)
			q.end(out, err)
		}
	}
	var keep bool
	if len(batch) == 1 {
		q := batch[0]
		out, ok, err := r.run(q.ctx, q.input)
		keep = ok
		ended(q, out, err)
	} else {
		c := r.(*child)
		calls := make([]childproc.Queued, len(batch))
		for i, q := range batch {
			cc, x := c.newCall(q.ctx, q.input, false)
			calls[i] = childproc.Queued{Ctx: q.ctx, Exchange: x,
				Begin: q.start,
				End: func(result, errFrame []byte, keep bool, err error) {
					defer cc.cancel()
					out, _, err := cc.finish(result, errFrame, keep, err)
					ended(q, out, err)
				},
			}
		}
		m.batched.Add(uint64(len(calls)))
		keep = c.proc.CallBatch(calls, holdAnswers(m.spec))
	}
	if keep {
		m.sup.Release(r)
	} else {
		m.sup.Discard(r)
	}
	if len(again) > 0 {
		m.bmu.Lock()
		cs.waiting = slices.Insert(cs.waiting, 0, again...)
		m.bmu.Unlock()
	}
}
