package tasks

import (
	"context"
	"errors"
	"fmt"
	"hash/fnv"
	"log/slog"
	"math/rand/v2"
	"slices"
	"sort"
	"strconv"
	"strings"
	"sync"
	"time"

	"go.etcd.io/etcd/api/v3/mvccpb"
	clientv3 "go.etcd.io/etcd/client/v3"
	"google.golang.org/grpc/codes"
	"google.golang.org/grpc/status"
	"google.golang.org/protobuf/proto"

	v1 "github.com/hivemind/taskworker/api/taskworker/v1"
	"github.com/hivemind/taskworker/internal/etcdwatch"
)

// Runner claims queued tasks and runs them, on one pool replica.
type Runner struct {
	s    *Store
	call Caller
	log  *slog.Logger
	wake chan struct{}
	// sweepNow asks for a sweep: a replica's presence key went.
	sweepNow chan struct{}
	// slots holds a token for each task this replica claims or runs.
	slots chan struct{}

	mu       sync.Mutex
	lease    clientv3.LeaseID
	presence int64    // the revision of this replica's presence key
	live     []string // the live replicas' leases (from their presence keys), sorted
	queued   map[string]*queued
	pending  map[string]bool               // being claimed by this replica
	running  map[string]context.CancelFunc // this replica's, by id
	// unrecorded holds the tasks whose attempts run here and whose
	// outcomes are not written yet: a Wait for one need not read it first,
	// since this runner tells its store's waiters when it writes.
	unrecorded map[string]string // by id, the owner
	runCtx     context.Context   // Run's, once it has read the queue
	draining   bool
	wg         sync.WaitGroup
}

type queued struct {
	owner     string
	notBefore int64
	seen      time.Time // when this replica saw it queued
	retryAt   time.Time // after a claim that did not succeed
	claiming  bool      // in a claim round now
}

// stealAfter is how long a task waits for the replica whose share it is
// before the others take it too (replicas share the queue by task id, so
// that they do not all race for the same tasks).
const stealAfter = 250 * time.Millisecond

// NewRunner returns a runner over the store's etcd that runs attempts with
// call.
func NewRunner(s *Store, call Caller) *Runner {
	log := s.cfg.Logger
	if log == nil {
		log = slog.New(slog.DiscardHandler)
	}
	r := &Runner{s: s, call: call, log: log.With("component", "tasks"), wake: make(chan struct{}, 1),
		sweepNow: make(chan struct{}, 1), slots: make(chan struct{}, max(s.cfg.Slots, 1)),
		queued: map[string]*queued{}, pending: map[string]bool{}, running: map[string]context.CancelFunc{},
		unrecorded: map[string]string{}}
	s.runner.Store(r)
	return r
}

func leaseName(l clientv3.LeaseID) string { return strconv.FormatInt(int64(l), 16) }

// runningValue is a running key's value: the task's owner and the lease of
// the replica that claimed it.
func runningValue(owner, lease string) string { return owner + " " + lease }

// Run claims and runs tasks until ctx ends, then hands the tasks still
// running back to the queue (after Drain's grace, if Drain was called).
// ready is closed once the runner holds its lease and has read the queue.
func (r *Runner) Run(ctx context.Context, ready chan<- struct{}) error {
	if err := r.join(ctx); err != nil {
		return err
	}
	var wg sync.WaitGroup
	queueReady := make(chan struct{})
	wg.Go(func() { r.keepLease(ctx) })
	wg.Go(func() { etcdwatch.Prefix(ctx, r.s.cli, r.s.k.queues(), r.applyQueue, queueReady) })
	wg.Go(func() { etcdwatch.Prefix(ctx, r.s.cli, r.s.k.cancels(), r.applyCancels, nil) })
	wg.Go(func() { etcdwatch.Prefix(ctx, r.s.cli, r.s.k.replicas(), r.applyReplicas, nil) })
	wg.Go(func() { r.watchClaims(ctx) })
	wg.Go(func() { r.schedule(ctx) })
	select {
	case <-queueReady:
	case <-ctx.Done():
	}
	r.mu.Lock()
	r.runCtx = ctx
	r.mu.Unlock()
	if ready != nil {
		close(ready)
	}
	r.dispatch(ctx)
	wg.Wait()
	r.wg.Wait()
	// The lease goes with the replica: its presence ends now rather than
	// after the TTL, so the others sweep at once.
	rctx, cancel := context.WithTimeout(context.WithoutCancel(ctx), 2*time.Second)
	defer cancel()
	r.mu.Lock()
	lease := r.lease
	r.mu.Unlock()
	_, _ = r.s.cli.Revoke(rctx, lease)
	return nil
}

// join takes a lease for this replica and records its presence under it:
// claims are made only while the presence key is there, and a running task
// whose claimer's presence is gone is queued again.
func (r *Runner) join(ctx context.Context) error {
	ttl := max(int64(r.s.cfg.LeaseTTL/time.Second), 1)
	g, err := r.s.cli.Grant(ctx, ttl)
	if err != nil {
		return fmt.Errorf("tasks: a lease for this replica's claims: %w", err)
	}
	put, err := r.s.cli.Put(ctx, r.s.k.replica(leaseName(g.ID)), r.s.cfg.Replica, clientv3.WithLease(g.ID))
	if err != nil {
		return fmt.Errorf("tasks: recording this replica: %w", err)
	}
	r.mu.Lock()
	r.lease, r.presence = g.ID, put.Header.Revision
	r.mu.Unlock()
	return nil
}

// keepLease keeps this replica's lease alive until ctx ends; if the lease
// is lost (cut off from etcd past its TTL), it joins again with a new one.
func (r *Runner) keepLease(ctx context.Context) {
	for ctx.Err() == nil {
		r.mu.Lock()
		lease := r.lease
		r.mu.Unlock()
		// The lease outlives ctx by up to its TTL, so that the attempts
		// stopped with ctx can still be handed back under it.
		ka, err := r.s.cli.KeepAlive(ctx, lease)
		if err == nil {
			for range ka {
			}
		}
		if ctx.Err() != nil {
			return
		}
		r.log.Warn("this replica's lease on its tasks was lost; its running tasks will run again elsewhere", "err", err)
		for ctx.Err() == nil {
			if err := r.join(ctx); err == nil {
				r.poke()
				break
			}
			sleep(ctx, time.Second)
		}
	}
}

func (r *Runner) poke() {
	select {
	case r.wake <- struct{}{}:
	default:
	}
}

func (r *Runner) applyQueue(kvs []etcdwatch.KV, reset bool, _ int64) {
	now := time.Now()
	r.mu.Lock()
	if reset {
		r.queued = map[string]*queued{}
	}
	for _, e := range kvs {
		id := strings.TrimPrefix(e.Key, r.s.k.queues())
		if e.Value == nil {
			delete(r.queued, id)
			continue
		}
		owner, nb := parseQueueValue(e.Value)
		r.queued[id] = &queued{owner: owner, notBefore: nb, seen: now}
	}
	r.mu.Unlock()
	r.poke()
}

func (r *Runner) applyCancels(kvs []etcdwatch.KV, _ bool, _ int64) {
	r.mu.Lock()
	defer r.mu.Unlock()
	for _, e := range kvs {
		if e.Value == nil {
			continue
		}
		if cancel, ok := r.running[strings.TrimPrefix(e.Key, r.s.k.cancels())]; ok {
			cancel()
		}
	}
}

// applyReplicas follows which replicas are present; when one goes, the
// tasks it was running are swept back to the queue.
func (r *Runner) applyReplicas(kvs []etcdwatch.KV, reset bool, _ int64) {
	r.mu.Lock()
	live := map[string]bool{}
	if !reset {
		for _, l := range r.live {
			live[l] = true
		}
	}
	gone := false
	for _, e := range kvs {
		l := strings.TrimPrefix(e.Key, r.s.k.replicas())
		live[l] = e.Value != nil
		gone = gone || e.Value == nil
	}
	r.live = r.live[:0]
	for l, ok := range live {
		if ok {
			r.live = append(r.live, l)
		}
	}
	sort.Strings(r.live)
	r.mu.Unlock()
	if gone || reset {
		select {
		case r.sweepNow <- struct{}{}:
		default:
		}
	}
	r.poke() // this replica's share changed
}

// mine reports whether task id is this replica's share of the queue.
// Called with r.mu held.
func (r *Runner) mine(id string) bool {
	me := sort.SearchStrings(r.live, leaseName(r.lease))
	if len(r.live) < 2 || me == len(r.live) || r.live[me] != leaseName(r.lease) {
		return true
	}
	h := fnv.New32a()
	h.Write([]byte(id))
	return int(h.Sum32()%uint32(len(r.live))) == me
}

// pick is a queued task chosen to claim.
type pick struct{ id, owner string }

// next picks the tasks to claim now, at most n: owners take turns, each
// owner's oldest ready task first. It returns when the next one not yet
// ready will be (zero: none waits).
func (r *Runner) next(n int, now time.Time) (picks []pick, wakeAt time.Time) {
	r.mu.Lock()
	defer r.mu.Unlock()
	later := func(t time.Time) {
		if wakeAt.IsZero() || t.Before(wakeAt) {
			wakeAt = t
		}
	}
	byOwner := map[string][]string{}
	for id, q := range r.queued {
		switch nb := time.UnixMilli(q.notBefore); {
		case nb.After(now):
			later(nb)
		case q.retryAt.After(now):
			later(q.retryAt)
		case q.claiming:
		case !r.mine(id) && now.Sub(q.seen) < stealAfter:
			later(q.seen.Add(stealAfter))
		default:
			byOwner[q.owner] = append(byOwner[q.owner], id)
		}
	}
	order := make([]string, 0, len(byOwner))
	for o, ids := range byOwner {
		sort.Strings(ids)
		order = append(order, o)
	}
	sort.Strings(order)
	for round := 0; len(picks) < n; round++ {
		any := false
		for _, o := range order {
			if ids := byOwner[o]; round < len(ids) && len(picks) < n {
				picks, any = append(picks, pick{ids[round], o}), true
			}
		}
		if !any {
			break
		}
	}
	for _, p := range picks {
		r.queued[p.id].claiming = true
	}
	return picks, wakeAt
}

// claimRounds bounds the claims in flight at once: a round waits for etcd
// twice (a read, then the claims' transaction), and the next round need not
// wait for it.
const claimRounds = 4

// dispatch claims tasks while there are free slots, until ctx ends.
func (r *Runner) dispatch(ctx context.Context) {
	slots := r.slots
	rounds := make(chan struct{}, claimRounds)
	for ctx.Err() == nil {
		r.mu.Lock()
		draining := r.draining
		r.mu.Unlock()
		free := cap(slots) - len(slots)
		var wakeAt time.Time
		if !draining && free > 0 && len(rounds) < cap(rounds) {
			var picks []pick
			picks, wakeAt = r.next(free, time.Now())
			if len(picks) > 0 {
				for range picks {
					slots <- struct{}{}
				}
				rounds <- struct{}{}
				r.wg.Go(func() {
					cs := r.claim(ctx, picks)
					for range len(picks) - len(cs) {
						<-slots
					}
					for _, c := range cs {
						r.start(ctx, c, func() { <-slots; r.poke() })
					}
					r.unpend(picks...)
					<-rounds
					r.poke()
				})
				continue // more may be ready
			}
		}
		timer := time.NewTimer(time.Second)
		if !wakeAt.IsZero() {
			timer.Reset(time.Until(wakeAt))
		}
		select {
		case <-ctx.Done():
		case <-r.wake:
		case <-timer.C:
		}
		timer.Stop()
	}
}

// claimed is an attempt this replica claimed: the task as recorded by the
// claim, the claim's revision, and the lease it was claimed under.
type claimed struct {
	t     *v1.Task
	rev   int64
	lease string
}

// claim takes picks for this replica: one read of their records, then one
// batch of transactions, each of which succeeds only if its record has not
// changed since the read (another replica took it, or it was cancelled).
func (r *Runner) claim(ctx context.Context, picks []pick) []claimed {
	r.mu.Lock()
	lease, presence := leaseName(r.lease), r.presence
	for _, p := range picks {
		r.pending[p.id] = true
	}
	r.mu.Unlock()
	var reads []clientv3.Op
	for _, p := range picks {
		// A read that lags is harmless: the claim compares the revision.
		reads = append(reads, clientv3.OpGet(r.s.k.record(p.owner, p.id), clientv3.WithSerializable()))
	}
	var kvs [][]*mvccpb.KeyValue
	for i := 0; i < len(reads); i += batchOps {
		resp, err := r.s.cli.Txn(ctx).Then(reads[i:min(i+batchOps, len(reads))]...).Commit()
		if err != nil {
			r.retryLater(picks...)
			return nil
		}
		for _, rr := range resp.Responses {
			kvs = append(kvs, rr.GetResponseRange().GetKvs())
		}
	}
	var writes []*write
	var tasks []*v1.Task
	now := time.Now().UnixMilli()
	for i, p := range picks {
		rk := r.s.k.record(p.owner, p.id)
		t := &v1.Task{}
		if len(kvs[i]) == 0 || proto.Unmarshal(kvs[i][0].Value, t) != nil || Ended(t.State) {
			// A stale queue key: its task ended or is gone.
			rev := int64(0)
			if len(kvs[i]) > 0 {
				rev = kvs[i][0].ModRevision
			}
			writes = append(writes, newWrite([]cond{{rk, rev}}, clientv3.OpDelete(r.s.k.queue(p.id))))
			tasks = append(tasks, nil)
			continue
		}
		if t.State != v1.TaskState_TASK_STATE_QUEUED {
			continue // claimed elsewhere: its queue key's deletion is on its way
		}
		t.State = v1.TaskState_TASK_STATE_RUNNING
		t.Attempts = append(t.Attempts, &v1.Attempt{Number: int32(len(t.Attempts) + 1), StartedAtMs: now})
		val, err := proto.Marshal(t)
		if err != nil {
			continue
		}
		writes = append(writes, newWrite([]cond{{rk, kvs[i][0].ModRevision}, {r.s.k.replica(lease), presence}},
			clientv3.OpPut(rk, string(val)),
			clientv3.OpDelete(r.s.k.queue(p.id)),
			clientv3.OpPut(r.s.k.running(p.id), runningValue(p.owner, lease))))
		tasks = append(tasks, t)
	}
	var out []claimed
	if err := r.s.batch.do(ctx, writes...); err == nil {
		for i, w := range writes {
			if t := tasks[i]; t != nil && w.ok {
				r.forget(t.Id)
				out = append(out, claimed{t: t, rev: w.rev, lease: lease})
			}
		}
	}
	// The others stay queued here until their keys' changes arrive.
	r.retryLater(picks...)
	return out
}

// retryLater keeps picks from being picked again for a while: the change
// that made their claim fail is on its way.
func (r *Runner) retryLater(picks ...pick) {
	at := time.Now().Add(100 * time.Millisecond)
	r.mu.Lock()
	defer r.mu.Unlock()
	for _, p := range picks {
		if q, ok := r.queued[p.id]; ok {
			q.retryAt, q.claiming = at, false
		}
	}
}

// unpend ends picks' claims: started, or not claimed.
func (r *Runner) unpend(picks ...pick) {
	r.mu.Lock()
	defer r.mu.Unlock()
	for _, p := range picks {
		delete(r.pending, p.id)
	}
}

// submitAndClaim records a new task t already claimed by this replica and
// starts it, when a slot is free and no queued task is ready to take it:
// one transaction instead of a submit, a read and a claim. ok is false
// when it did not (the caller queues the task); err is set when the
// transaction failed, and then t may or may not be recorded, as with any
// failed write.
func (r *Runner) submitAndClaim(ctx context.Context, t *v1.Task, conds []cond) (_ *v1.Task, ok bool, err error) {
	now := time.Now()
	r.mu.Lock()
	runCtx, lease, presence := r.runCtx, leaseName(r.lease), r.presence
	if runCtx == nil || runCtx.Err() != nil || r.draining || r.readyQueued(now) {
		r.mu.Unlock()
		return nil, false, nil
	}
	select {
	case r.slots <- struct{}{}:
	default:
		r.mu.Unlock()
		return nil, false, nil
	}
	r.pending[t.Id] = true
	r.mu.Unlock()
	defer r.unpend(pick{id: t.Id})
	mine := proto.Clone(t).(*v1.Task)
	mine.State = v1.TaskState_TASK_STATE_RUNNING
	mine.Attempts = []*v1.Attempt{{Number: 1, StartedAtMs: now.UnixMilli()}}
	val, err := proto.Marshal(mine)
	if err != nil {
		<-r.slots
		return nil, false, err
	}
	ops := []clientv3.Op{clientv3.OpPut(r.s.k.record(t.Owner, t.Id), string(val)),
		clientv3.OpPut(r.s.k.running(t.Id), runningValue(t.Owner, lease)), clientv3.OpPut(r.s.k.active(t.Owner, t.Id), "")}
	if t.IdempotencyKey != "" {
		ops = append(ops, clientv3.OpPut(r.s.k.idem(t.Owner, t.IdempotencyKey), t.Id))
	}
	w := newWrite(append(conds, cond{r.s.k.replica(lease), presence}), ops...)
	if err := r.s.batch.do(ctx, w); err != nil || w.err != nil || !w.ok {
		<-r.slots
		if err == nil {
			err = w.err
		}
		if err != nil {
			return nil, false, fmt.Errorf("recording the task in etcd: %w", err)
		}
		return nil, false, nil // an idempotency key, or this replica's lease lost: the caller sorts it out
	}
	r.start(runCtx, claimed{t: mine, rev: w.rev, lease: lease}, func() { <-r.slots; r.poke() })
	out := proto.Clone(t).(*v1.Task)
	out.State, out.Attempts = v1.TaskState_TASK_STATE_RUNNING, []*v1.Attempt{{Number: 1, StartedAtMs: now.UnixMilli()}}
	return out, true, nil
}

// readyQueued reports whether a queued task is ready to be claimed: those
// go before a task just submitted. Called with r.mu held.
func (r *Runner) readyQueued(now time.Time) bool {
	ms := now.UnixMilli()
	for _, q := range r.queued {
		if q.notBefore <= ms && !q.claiming {
			return true
		}
	}
	return false
}

func (r *Runner) forget(id string) {
	r.mu.Lock()
	delete(r.queued, id)
	r.mu.Unlock()
}

// start runs one attempt of c in its own goroutine; done frees its slot,
// once the call has returned: the outcome's write, batched with others,
// holds no slot, so that the time etcd takes to commit does not bound the
// calls in flight.
func (r *Runner) start(ctx context.Context, c claimed, done func()) {
	actx, cancel := context.WithCancel(context.WithoutCancel(ctx))
	r.mu.Lock()
	r.running[c.t.Id] = cancel
	r.unrecorded[c.t.Id] = c.t.Owner
	r.mu.Unlock()
	r.wg.Go(func() {
		defer func() {
			r.mu.Lock()
			delete(r.running, c.t.Id)
			r.mu.Unlock()
			cancel()
		}()
		// A cancellation recorded before this replica watched for it.
		if c.t.CancelRequested {
			cancel()
		}
		r.attempt(actx, ctx, c, done)
	})
}

// attempt calls the function once and records the outcome. stopping is the
// runner's context: when it ends first the attempt is handed back.
func (r *Runner) attempt(actx, stopping context.Context, c claimed, done func()) {
	t := c.t
	a := t.Attempts[len(t.Attempts)-1]
	callCtx := actx
	if t.TimeoutMs > 0 {
		var cancel context.CancelFunc
		callCtx, cancel = context.WithTimeout(actx, time.Duration(t.TimeoutMs)*time.Millisecond)
		defer cancel()
	}
	stopped := context.AfterFunc(stopping, func() { r.cancelRunning(t.Id) })
	defer stopped()
	resp, err := r.call(callCtx, t.Owner, &v1.FunctionCallRequest{FunctionName: t.FunctionName, Args: t.Args, UserId: t.Owner,
		TaskId: t.Id, TaskAttempt: a.Number})
	done()
	a.EndedAtMs = time.Now().UnixMilli()
	if resp != nil {
		a.WorkerId = resp.WorkerId
	}
	rctx, cancel := context.WithTimeout(context.WithoutCancel(stopping), 10*time.Second)
	defer cancel()
	val, err := r.record(rctx, c, resp, err, stopping.Err() != nil || errors.Is(err, ErrHandedBack))
	if err != nil {
		// The task stays running under this replica's lease; the sweep
		// finds it is not running here and queues it again.
		r.log.Warn("recording a task's attempt failed; it will be queued again", "task", t.Id, "err", err)
	}
	r.mu.Lock()
	delete(r.unrecorded, t.Id)
	r.mu.Unlock()
	// After unrecorded: a Wait that saw the task unrecorded was waiting
	// already, and hears this.
	r.s.waits.notify(r.s.k.record(t.Owner, t.Id), val)
}

// isUnrecorded reports whether owner's task id has an attempt running
// here, its outcome not yet written.
func (r *Runner) isUnrecorded(owner, id string) bool {
	r.mu.Lock()
	defer r.mu.Unlock()
	o, ok := r.unrecorded[id]
	return ok && o == owner
}

func (r *Runner) cancelRunning(id string) {
	r.mu.Lock()
	defer r.mu.Unlock()
	if cancel, ok := r.running[id]; ok {
		cancel()
	}
}

// retryable reports whether an attempt's error was the loss of its worker
// (or no worker at all, or its time bound), rather than the function's own.
func retryable(err error) bool {
	switch status.Code(err) {
	case codes.Unavailable, codes.DeadlineExceeded, codes.Aborted, codes.ResourceExhausted:
		return true
	}
	return false
}

// record writes an attempt's outcome: the task ends, or goes back to the
// queue for another attempt. handBack means this replica is stopping: the
// attempt does not count as the task's failure. The outcome is written
// without reading the record first, on the condition that it is still as
// the claim wrote it; only when it is not (a cancellation, or a recovery
// after this replica's lease was lost) is it read again.
//
// It returns the record it wrote when it wrote it without a read (nil
// otherwise: the waiters read it).
func (r *Runner) record(ctx context.Context, c claimed, resp *v1.FunctionCallResponse, callErr error, handBack bool) ([]byte, error) {
	t := c.t
	rk := r.s.k.record(t.Owner, t.Id)
	ops, val, err := r.outcome(ctx, t, resp, callErr, handBack)
	if err != nil {
		return nil, err
	}
	w := newWrite([]cond{{rk, c.rev}}, ops...)
	if err := r.s.batch.do(ctx, w); err != nil {
		return nil, err
	}
	if w.err != nil {
		return nil, w.err
	}
	if w.ok {
		return val, nil
	}
	return nil, r.recordAgain(ctx, c, resp, callErr, handBack)
}

// recordAgain writes an attempt's outcome over a record that changed since
// the claim: it reads it first.
func (r *Runner) recordAgain(ctx context.Context, c claimed, resp *v1.FunctionCallResponse, callErr error, handBack bool) error {
	t := c.t
	rk := r.s.k.record(t.Owner, t.Id)
	mine := clientv3.Compare(clientv3.Value(r.s.k.running(t.Id)), "=", runningValue(t.Owner, c.lease))
	for {
		cur, rev, err := r.s.Get(ctx, t.Owner, t.Id)
		if err != nil {
			return err
		}
		if cur.State != v1.TaskState_TASK_STATE_RUNNING || len(cur.Attempts) != len(t.Attempts) {
			return nil // recovered and requeued meanwhile: this attempt lost the race
		}
		cur.Attempts[len(cur.Attempts)-1] = t.Attempts[len(t.Attempts)-1]
		ops, _, err := r.outcome(ctx, cur, resp, callErr, handBack)
		if err != nil {
			return err
		}
		tx, err := r.s.cli.Txn(ctx).If(clientv3.Compare(clientv3.ModRevision(rk), "=", rev), mine).Then(ops...).Commit()
		if err != nil {
			return fmt.Errorf("recording task %s: %w", t.Id, err)
		}
		if tx.Succeeded {
			return nil
		}
		// The record changed again, or the claim is no longer this
		// replica's: read again; a lost claim shows as a requeued record.
		if g, err := r.s.cli.Get(ctx, r.s.k.running(t.Id)); err == nil && (len(g.Kvs) == 0 || string(g.Kvs[0].Value) != runningValue(t.Owner, c.lease)) {
			return nil
		}
	}
}

// outcome sets cur's state after its last attempt and returns the
// operations that record it, and the record.
func (r *Runner) outcome(ctx context.Context, cur *v1.Task, resp *v1.FunctionCallResponse, callErr error, handBack bool) ([]clientv3.Op, []byte, error) {
	rk := r.s.k.record(cur.Owner, cur.Id)
	a := cur.Attempts[len(cur.Attempts)-1]
	requeue := false
	switch {
	case callErr == nil:
		cur.State, cur.Result = v1.TaskState_TASK_STATE_SUCCEEDED, resp.Result
	case cur.CancelRequested:
		cur.State = v1.TaskState_TASK_STATE_CANCELLED
		a.Error, a.Code = "cancelled", int32(codes.Canceled)
	case handBack:
		a.Error, a.Code, a.HandedBack = "handed back: the pool replica running it stopped", int32(codes.Unavailable), true
		if errors.Is(callErr, ErrHandedBack) {
			a.Error = callErr.Error()
		}
		requeue = true
	default:
		st := status.Convert(callErr)
		a.Error, a.Code = st.Message(), int32(st.Code())
		requeue = counted(cur) < cur.Retry.GetMaxAttempts() && (retryable(callErr) || cur.Retry.GetRetryErrors())
		if !requeue {
			cur.State = v1.TaskState_TASK_STATE_FAILED
		}
	}
	ops := []clientv3.Op{clientv3.OpDelete(r.s.k.running(cur.Id))}
	if cur.CancelRequested {
		ops = append(ops, clientv3.OpDelete(r.s.k.cancel(cur.Id)))
	}
	if requeue {
		cur.State = v1.TaskState_TASK_STATE_QUEUED
		cur.NotBeforeMs = time.Now().Add(backoff(cur)).UnixMilli()
		if handBack {
			cur.NotBeforeMs = 0
		}
		val, err := proto.Marshal(cur)
		if err != nil {
			return nil, nil, err
		}
		return append(ops, clientv3.OpPut(rk, string(val)), clientv3.OpPut(r.s.k.queue(cur.Id), queueValue(cur.Owner, cur.NotBeforeMs))), val, nil
	}
	cur.EndedAtMs = time.Now().UnixMilli()
	lease, err := r.s.keep.lease(ctx)
	if err != nil {
		return nil, nil, err
	}
	val, err := proto.Marshal(cur)
	if err != nil {
		return nil, nil, err
	}
	ops = append(ops, clientv3.OpPut(rk, string(val), clientv3.WithLease(lease)), clientv3.OpDelete(r.s.k.active(cur.Owner, cur.Id)))
	return append(ops, r.s.idemOps(cur, lease)...), val, nil
}

// counted is how many of t's attempts count against its max_attempts: those
// not handed back by a stopping or lost replica.
func counted(t *v1.Task) int32 {
	n := int32(0)
	for _, a := range t.Attempts {
		if !a.HandedBack {
			n++
		}
	}
	return n
}

// backoff is the wait before a task's next attempt: its policy's backoff,
// doubled for each attempt after the first, at most a minute, with jitter.
func backoff(t *v1.Task) time.Duration {
	d := time.Duration(t.Retry.GetBackoffMs()) * time.Millisecond
	for range len(t.Attempts) - 1 {
		d *= 2
		if d > time.Minute {
			d = time.Minute
			break
		}
	}
	return d/2 + rand.N(d/2+1)
}

// watchClaims queues again the running tasks whose replica is gone. It
// looks whenever a replica's presence key goes, and every SweepInterval.
func (r *Runner) watchClaims(ctx context.Context) {
	tick := time.NewTicker(r.s.cfg.SweepInterval)
	defer tick.Stop()
	for {
		r.sweep(ctx)
		select {
		case <-ctx.Done():
			return
		case <-tick.C:
		case <-r.sweepNow:
		}
	}
}

// sweep requeues each running task whose claimer's presence is gone, and
// this replica's orphans. It reads the presences and the running tasks at
// one revision, so a replica that has just joined is seen with its claims.
func (r *Runner) sweep(ctx context.Context) {
	resp, err := r.s.cli.Txn(ctx).Then(clientv3.OpGet(r.s.k.replicas(), clientv3.WithPrefix(), clientv3.WithKeysOnly()),
		clientv3.OpGet(r.s.k.runnings(), clientv3.WithPrefix())).Commit()
	if err != nil {
		return
	}
	live := map[string]bool{}
	for _, kv := range resp.Responses[0].GetResponseRange().GetKvs() {
		live[strings.TrimPrefix(string(kv.Key), r.s.k.replicas())] = true
	}
	// The recoveries of a lost replica's tasks go in parallel: one by one,
	// each a read and a transaction, they would keep its last tasks
	// waiting for as long again as the lease took to expire.
	var wg sync.WaitGroup
	limit := make(chan struct{}, recoverAtOnce)
	for _, kv := range resp.Responses[1].GetResponseRange().GetKvs() {
		owner, lease, _ := strings.Cut(string(kv.Value), " ")
		id := strings.TrimPrefix(string(kv.Key), r.s.k.runnings())
		if !live[lease] || r.orphan(id, lease) {
			limit <- struct{}{}
			wg.Go(func() {
				defer func() { <-limit }()
				r.recover(ctx, owner, id, kv.ModRevision)
			})
		}
	}
	wg.Wait()
}

// recoverAtOnce bounds the recoveries a sweep makes at once.
const recoverAtOnce = 32

// orphan reports whether task id, claimed under this replica's lease, is
// neither being claimed nor running here: its claim or its outcome was
// written by a transaction that failed, yet took effect.
func (r *Runner) orphan(id, lease string) bool {
	r.mu.Lock()
	defer r.mu.Unlock()
	_, running := r.running[id]
	return lease == leaseName(r.lease) && !running && !r.pending[id]
}

// recover queues again a running task whose claimer is gone; claimRev is
// its running key's revision, so that a sweep that lags cannot requeue a
// later claim.
func (r *Runner) recover(ctx context.Context, owner, id string, claimRev int64) {
	t, rev, err := r.s.Get(ctx, owner, id)
	if err != nil && !errors.Is(err, ErrNotFound) {
		return
	}
	rk := r.s.k.record(owner, id)
	conds := []clientv3.Cmp{clientv3.Compare(clientv3.ModRevision(r.s.k.running(id)), "=", claimRev)}
	ops := []clientv3.Op{clientv3.OpDelete(r.s.k.running(id))}
	if t != nil && t.State == v1.TaskState_TASK_STATE_RUNNING {
		conds = append(conds, clientv3.Compare(clientv3.ModRevision(rk), "=", rev))
		if a := t.Attempts; len(a) > 0 && a[len(a)-1].EndedAtMs == 0 {
			a[len(a)-1].EndedAtMs = time.Now().UnixMilli()
			last := a[len(a)-1]
			last.Error, last.Code, last.HandedBack = "lost: the pool replica running it stopped answering etcd", int32(codes.Unavailable), true
		}
		if t.CancelRequested {
			t.State, t.EndedAtMs = v1.TaskState_TASK_STATE_CANCELLED, time.Now().UnixMilli()
			lease, err := r.s.keep.lease(ctx)
			if err != nil {
				return
			}
			val, _ := proto.Marshal(t)
			ops = append(ops, clientv3.OpPut(rk, string(val), clientv3.WithLease(lease)), clientv3.OpDelete(r.s.k.cancel(id)),
				clientv3.OpDelete(r.s.k.active(owner, id)))
			ops = append(ops, r.s.idemOps(t, lease)...)
		} else {
			t.State, t.NotBeforeMs = v1.TaskState_TASK_STATE_QUEUED, 0
			val, _ := proto.Marshal(t)
			ops = append(ops, clientv3.OpPut(rk, string(val)), clientv3.OpPut(r.s.k.queue(id), queueValue(owner, 0)))
		}
	}
	tx, err := r.s.cli.Txn(ctx).If(conds...).Then(ops...).Commit()
	if err == nil && tx.Succeeded && t != nil {
		r.log.Info("task queued again: the replica running it was lost", "task", id, "owner", owner)
	}
}

// Drain stops claiming tasks and waits until those running have ended, or
// ctx ends. Ending Run's context afterwards hands back any still running.
func (r *Runner) Drain(ctx context.Context) error {
	r.mu.Lock()
	r.draining = true
	r.mu.Unlock()
	for r.Running() > 0 {
		select {
		case <-ctx.Done():
			return fmt.Errorf("tasks: %d still running after the grace period; they are handed back", r.Running())
		case <-time.After(50 * time.Millisecond):
		}
	}
	return nil
}

// ErrHandedBack marks a Caller's error for an attempt that was stopped to
// be run elsewhere (its worker was drained): the attempt is handed back,
// as when this replica stops, and does not count against max_attempts.
var ErrHandedBack = errors.New("attempt handed back")

type handedBack struct{ msg string }

func (e handedBack) Error() string        { return e.msg }
func (e handedBack) Is(target error) bool { return target == ErrHandedBack }

// HandedBack returns an ErrHandedBack that says why.
func HandedBack(why string) error { return handedBack{why} }

// ID names this replica among Replicas: its lease, in hex.
func (r *Runner) ID() string {
	r.mu.Lock()
	defer r.mu.Unlock()
	return leaseName(r.lease)
}

// Replicas returns the ids of the replicas whose runners are present,
// sorted.
func (r *Runner) Replicas() []string {
	r.mu.Lock()
	defer r.mu.Unlock()
	return slices.Clone(r.live)
}

// Running returns how many tasks this replica runs now.
func (r *Runner) Running() int {
	r.mu.Lock()
	defer r.mu.Unlock()
	return len(r.running)
}
