package tasks

import (
	"context"
	"errors"
	"fmt"
	"log/slog"
	"math/rand/v2"
	"sort"
	"strings"
	"sync"
	"time"

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

	lease clientv3.LeaseID
	wake  chan struct{}

	mu       sync.Mutex
	queued   map[string]queued             // by id, from the queue's keys
	running  map[string]context.CancelFunc // this replica's, by id
	draining bool
	wg       sync.WaitGroup
}

type queued struct {
	owner     string
	notBefore int64
}

// NewRunner returns a runner over the store's etcd that runs attempts with
// call.
func NewRunner(s *Store, call Caller) *Runner {
	log := s.cfg.Logger
	if log == nil {
		log = slog.New(slog.DiscardHandler)
	}
	return &Runner{s: s, call: call, log: log.With("component", "tasks"), wake: make(chan struct{}, 1),
		queued: map[string]queued{}, running: map[string]context.CancelFunc{}}
}

// Run claims and runs tasks until ctx ends, then hands the tasks still
// running back to the queue (after Drain's grace, if Drain was called).
// ready is closed once the runner holds its lease and has read the queue.
func (r *Runner) Run(ctx context.Context, ready chan<- struct{}) error {
	ttl := max(int64(r.s.cfg.LeaseTTL/time.Second), 1)
	g, err := r.s.cli.Grant(ctx, ttl)
	if err != nil {
		return fmt.Errorf("tasks: a lease for this replica's claims: %w", err)
	}
	r.lease = g.ID
	ka, err := r.s.cli.KeepAlive(ctx, g.ID)
	if err != nil {
		return fmt.Errorf("tasks: keeping the lease: %w", err)
	}
	go func() {
		for range ka {
		}
	}()
	var wg sync.WaitGroup
	queueReady := make(chan struct{})
	wg.Go(func() { etcdwatch.Prefix(ctx, r.s.cli, r.s.k.queues(), r.applyQueue, queueReady) })
	wg.Go(func() { etcdwatch.Prefix(ctx, r.s.cli, r.s.k.cancels(), r.applyCancels, nil) })
	wg.Go(func() { r.watchClaims(ctx) })
	wg.Go(func() { r.schedule(ctx) })
	select {
	case <-queueReady:
	case <-ctx.Done():
	}
	if ready != nil {
		close(ready)
	}
	r.dispatch(ctx)
	wg.Wait()
	r.wg.Wait()
	// The lease goes with the replica: its claims end now rather than
	// after the TTL, so the tasks it handed back are not held up.
	rctx, cancel := context.WithTimeout(context.WithoutCancel(ctx), 2*time.Second)
	defer cancel()
	_, _ = r.s.cli.Revoke(rctx, g.ID)
	return nil
}

func (r *Runner) poke() {
	select {
	case r.wake <- struct{}{}:
	default:
	}
}

func (r *Runner) applyQueue(kvs []etcdwatch.KV, reset bool, _ int64) {
	r.mu.Lock()
	if reset {
		r.queued = map[string]queued{}
	}
	for _, e := range kvs {
		id := strings.TrimPrefix(e.Key, r.s.k.queues())
		if e.Value == nil {
			delete(r.queued, id)
			continue
		}
		owner, nb := parseQueueValue(e.Value)
		r.queued[id] = queued{owner: owner, notBefore: nb}
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

// next picks the tasks to claim now, at most n: owners take turns, each
// owner's oldest ready task first. It returns when the next one not yet
// ready will be.
func (r *Runner) next(n int, now int64) (picks []string, owners []string, wakeAt int64) {
	r.mu.Lock()
	defer r.mu.Unlock()
	byOwner := map[string][]string{}
	for id, q := range r.queued {
		if q.notBefore > now {
			if wakeAt == 0 || q.notBefore < wakeAt {
				wakeAt = q.notBefore
			}
			continue
		}
		byOwner[q.owner] = append(byOwner[q.owner], id)
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
				picks, owners, any = append(picks, ids[round]), append(owners, o), true
			}
		}
		if !any {
			break
		}
	}
	return picks, owners, wakeAt
}

// dispatch claims tasks while there are free slots, until ctx ends.
func (r *Runner) dispatch(ctx context.Context) {
	slots := make(chan struct{}, r.s.cfg.Slots)
	for ctx.Err() == nil {
		r.mu.Lock()
		draining := r.draining
		r.mu.Unlock()
		free := cap(slots) - len(slots)
		var wakeAt int64
		if !draining && free > 0 {
			var picks, owners []string
			picks, owners, wakeAt = r.next(free, time.Now().UnixMilli())
			for i, id := range picks {
				t, ok := r.claim(ctx, owners[i], id)
				if !ok {
					continue
				}
				slots <- struct{}{}
				r.start(ctx, t, func() { <-slots; r.poke() })
			}
		}
		timer := time.NewTimer(time.Second)
		if wakeAt > 0 {
			timer.Reset(time.Until(time.UnixMilli(wakeAt)))
		}
		select {
		case <-ctx.Done():
		case <-r.wake:
		case <-timer.C:
		}
		timer.Stop()
	}
}

// claim takes a queued task for this replica, or reports that another
// replica (or a cancellation) got it first.
func (r *Runner) claim(ctx context.Context, owner, id string) (*v1.Task, bool) {
	t, rev, err := r.s.Get(ctx, owner, id)
	if err != nil || t.State != v1.TaskState_TASK_STATE_QUEUED {
		if err == nil || errors.Is(err, ErrNotFound) {
			// A stale queue key: its task ended or is gone.
			_, _ = r.s.cli.Txn(ctx).If(clientv3.Compare(clientv3.CreateRevision(r.s.k.run(id)), "=", 0)).
				Then(clientv3.OpDelete(r.s.k.queue(id))).Commit()
		}
		r.forget(id)
		return nil, false
	}
	now := time.Now().UnixMilli()
	t.State = v1.TaskState_TASK_STATE_RUNNING
	t.Attempts = append(t.Attempts, &v1.Attempt{Number: int32(len(t.Attempts) + 1), StartedAtMs: now})
	val, _ := proto.Marshal(t)
	rk := r.s.k.record(owner, id)
	tx, err := r.s.cli.Txn(ctx).If(
		clientv3.Compare(clientv3.ModRevision(rk), "=", rev),
		clientv3.Compare(clientv3.CreateRevision(r.s.k.queue(id)), ">", 0),
		clientv3.Compare(clientv3.CreateRevision(r.s.k.run(id)), "=", 0),
	).Then(
		clientv3.OpPut(rk, string(val)),
		clientv3.OpDelete(r.s.k.queue(id)),
		clientv3.OpPut(r.s.k.run(id), r.s.cfg.Replica, clientv3.WithLease(r.lease)),
		clientv3.OpPut(r.s.k.running(id), owner),
	).Commit()
	r.forget(id)
	if err != nil || !tx.Succeeded {
		return nil, false
	}
	return t, true
}

func (r *Runner) forget(id string) {
	r.mu.Lock()
	delete(r.queued, id)
	r.mu.Unlock()
}

// start runs one attempt of t in its own goroutine; done frees its slot.
func (r *Runner) start(ctx context.Context, t *v1.Task, done func()) {
	actx, cancel := context.WithCancel(context.WithoutCancel(ctx))
	r.mu.Lock()
	r.running[t.Id] = cancel
	r.mu.Unlock()
	r.wg.Go(func() {
		defer done()
		defer func() {
			r.mu.Lock()
			delete(r.running, t.Id)
			r.mu.Unlock()
			cancel()
		}()
		// A cancellation recorded before this replica watched for it.
		if t.CancelRequested {
			cancel()
		}
		r.attempt(actx, ctx, t)
	})
}

// attempt calls the function once and records the outcome. stopping is the
// runner's context: when it ends first the attempt is handed back.
func (r *Runner) attempt(actx, stopping context.Context, t *v1.Task) {
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
	a.EndedAtMs = time.Now().UnixMilli()
	if resp != nil {
		a.WorkerId = resp.WorkerId
	}
	rctx, cancel := context.WithTimeout(context.WithoutCancel(stopping), 10*time.Second)
	defer cancel()
	if err := r.record(rctx, t, resp, err, stopping.Err() != nil); err != nil {
		// The claim's lease ends with this replica or in LeaseTTL; the
		// sweeper then queues the task again.
		r.log.Warn("recording a task's attempt failed; it will be queued again", "task", t.Id, "err", err)
	}
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
// attempt does not count as the task's failure.
func (r *Runner) record(ctx context.Context, t *v1.Task, resp *v1.FunctionCallResponse, callErr error, handBack bool) error {
	rk := r.s.k.record(t.Owner, t.Id)
	for {
		cur, rev, err := r.s.Get(ctx, t.Owner, t.Id)
		if err != nil {
			return err
		}
		if cur.State != v1.TaskState_TASK_STATE_RUNNING || len(cur.Attempts) != len(t.Attempts) {
			return nil // recovered and requeued meanwhile: this attempt lost the race
		}
		cur.Attempts[len(cur.Attempts)-1] = t.Attempts[len(t.Attempts)-1]
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
			requeue = true
		default:
			st := status.Convert(callErr)
			a.Error, a.Code = st.Message(), int32(st.Code())
			requeue = counted(cur) < cur.Retry.GetMaxAttempts() && (retryable(callErr) || cur.Retry.GetRetryErrors())
			if !requeue {
				cur.State = v1.TaskState_TASK_STATE_FAILED
			}
		}
		ops := []clientv3.Op{clientv3.OpDelete(r.s.k.run(t.Id)), clientv3.OpDelete(r.s.k.running(t.Id)), clientv3.OpDelete(r.s.k.cancel(t.Id))}
		if requeue {
			cur.State = v1.TaskState_TASK_STATE_QUEUED
			cur.NotBeforeMs = time.Now().Add(backoff(cur)).UnixMilli()
			if handBack {
				cur.NotBeforeMs = 0
			}
			val, _ := proto.Marshal(cur)
			ops = append(ops, clientv3.OpPut(rk, string(val)), clientv3.OpPut(r.s.k.queue(t.Id), queueValue(t.Owner, cur.NotBeforeMs)))
		} else {
			cur.EndedAtMs = time.Now().UnixMilli()
			lease, err := r.s.keep.lease(ctx)
			if err != nil {
				return err
			}
			val, _ := proto.Marshal(cur)
			ops = append(ops, clientv3.OpPut(rk, string(val), clientv3.WithLease(lease)), clientv3.OpDelete(r.s.k.active(t.Owner, t.Id)))
			ops = append(ops, r.s.idemOps(cur, lease)...)
		}
		tx, err := r.s.cli.Txn(ctx).If(
			clientv3.Compare(clientv3.ModRevision(rk), "=", rev),
			clientv3.Compare(clientv3.LeaseValue(r.s.k.run(t.Id)), "=", r.lease),
		).Then(ops...).Commit()
		if err != nil {
			return fmt.Errorf("recording task %s: %w", t.Id, err)
		}
		if tx.Succeeded {
			return nil
		}
		// The record changed (a cancellation) or the claim is gone: read
		// again; a lost claim shows as a requeued record above.
		if g, err := r.s.cli.Get(ctx, r.s.k.run(t.Id)); err == nil && (len(g.Kvs) == 0 || clientv3.LeaseID(g.Kvs[0].Lease) != r.lease) {
			return nil
		}
	}
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

// watchClaims queues again the running tasks whose claims are gone: their
// replica was lost. It looks whenever a claim is deleted, and every
// SweepInterval.
func (r *Runner) watchClaims(ctx context.Context) {
	sweep := make(chan struct{}, 1)
	go func() {
		for wresp := range r.s.cli.Watch(clientv3.WithRequireLeader(ctx), r.s.k.runs(), clientv3.WithPrefix(), clientv3.WithFilterPut()) {
			if len(wresp.Events) > 0 || wresp.Err() != nil {
				select {
				case sweep <- struct{}{}:
				default:
				}
			}
		}
	}()
	tick := time.NewTicker(r.s.cfg.SweepInterval)
	defer tick.Stop()
	for {
		r.sweep(ctx)
		select {
		case <-ctx.Done():
			return
		case <-tick.C:
		case <-sweep:
		}
	}
}

// sweep requeues each running task that has no claim.
func (r *Runner) sweep(ctx context.Context) {
	resp, err := r.s.cli.Get(ctx, r.s.k.runnings(), clientv3.WithPrefix())
	if err != nil {
		return
	}
	for _, kv := range resp.Kvs {
		id := strings.TrimPrefix(string(kv.Key), r.s.k.runnings())
		owner := string(kv.Value)
		claim, err := r.s.cli.Get(ctx, r.s.k.run(id), clientv3.WithCountOnly())
		if err != nil || claim.Count > 0 {
			continue
		}
		r.recover(ctx, owner, id)
	}
}

// recover queues again a running task whose claim is gone.
func (r *Runner) recover(ctx context.Context, owner, id string) {
	t, rev, err := r.s.Get(ctx, owner, id)
	if err != nil && !errors.Is(err, ErrNotFound) {
		return
	}
	rk := r.s.k.record(owner, id)
	conds := []clientv3.Cmp{clientv3.Compare(clientv3.CreateRevision(r.s.k.run(id)), "=", 0),
		clientv3.Compare(clientv3.CreateRevision(r.s.k.running(id)), ">", 0)}
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

// Running returns how many tasks this replica runs now.
func (r *Runner) Running() int {
	r.mu.Lock()
	defer r.mu.Unlock()
	return len(r.running)
}
