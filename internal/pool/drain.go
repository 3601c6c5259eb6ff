package pool

import (
	"context"
	"crypto/rand"
	"encoding/hex"
	"encoding/json"
	"errors"
	"fmt"
	"slices"
	"strings"
	"time"

	clientv3 "go.etcd.io/etcd/client/v3"
	"google.golang.org/grpc/codes"
	"google.golang.org/grpc/status"

	v1 "github.com/hivemind/taskworker/api/taskworker/v1"
	"github.com/hivemind/taskworker/internal/etcdwatch"
	"github.com/hivemind/taskworker/internal/names"
	"github.com/hivemind/taskworker/internal/serving"
)

// A drained worker gets no new calls nor tasks from any pool replica; the
// ones running on it go on until they end or the drain's grace runs out,
// when each replica hands back the tasks it still runs there (they are
// queued again, their attempt not counted against max_attempts).
//
// The drain is a key in etcd, drains/<worker>, under the worker's
// registration lease: every replica follows it with a watch, and it goes
// with the registration (a restart registers anew, which undoes it). An
// undo rewrites the record as undone rather than deleting it, so that a
// deletion always means the registration's lease went: the registration
// and its drain are followed by two watches, and a replica that saw the
// drain go before the registration must not route to the leaving worker
// in between. Each
// replica, once nothing of its own runs on the worker or the grace has run
// out, writes what it saw under drainreports/<worker>/<drain id>/<replica>;
// the replica that was asked answers with the sum (RATIONALE.md, "Why is a
// drained task's attempt not counted?").

// DefaultDrainGrace is a drain's grace when the request gives none.
const DefaultDrainGrace = 30 * time.Second

// maxDrainGrace bounds a drain's grace.
const maxDrainGrace = time.Hour

// drainReportWait is how long past the grace the replica asked waits for
// the others' reports, and drainReportTTL how long (in seconds) reports are
// kept.
const (
	drainReportWait = 10 * time.Second
	drainReportTTL  = 60
)

// drainRecord is what etcd holds under drains/<worker>.
type drainRecord struct {
	ID         string `json:"id"`
	Lease      int64  `json:"lease"` // the registration drained
	StartedMs  int64  `json:"started_ms"`
	DeadlineMs int64  `json:"deadline_ms"`
	// Undone is set by an undo; the record stays until the lease goes.
	Undone bool `json:"undone,omitempty"`
}

// drainReport is one replica's account of a drain.
type drainReport struct {
	TasksFinished     int64    `json:"tasks_finished"`
	TasksHandedBack   []string `json:"tasks_handed_back,omitempty"`
	CallsFinished     int64    `json:"calls_finished"`
	CallsStillRunning int64    `json:"calls_still_running"`
}

// errHandedBack is the cause a task's call is cancelled with when its
// worker's drain hands it back.
var errHandedBack = errors.New("handed back")

// taskCall is one attempt of a task in flight through this replica, for
// the worker it runs on to hand back.
type taskCall struct {
	id     string
	cancel context.CancelCauseFunc
}

func taskCallFrom(ctx context.Context) *taskCall {
	tc, _ := ctx.Value(taskKey{}).(*taskCall)
	return tc
}

func (w *worker) addTask(tc *taskCall) {
	w.taskMu.Lock()
	defer w.taskMu.Unlock()
	if w.tasks == nil {
		w.tasks = map[*taskCall]bool{}
	}
	w.tasks[tc] = true
}

func (w *worker) removeTask(tc *taskCall) {
	w.taskMu.Lock()
	defer w.taskMu.Unlock()
	delete(w.tasks, tc)
}

// taskIDs returns the ids of the tasks running on w through this replica.
func (w *worker) taskIDs() map[string]bool {
	w.taskMu.Lock()
	defer w.taskMu.Unlock()
	ids := make(map[string]bool, len(w.tasks))
	for tc := range w.tasks {
		ids[tc.id] = true
	}
	return ids
}

// handBack cancels the task calls running on w through this replica and
// returns their tasks' ids.
func (w *worker) handBack() []string {
	w.taskMu.Lock()
	defer w.taskMu.Unlock()
	var ids []string
	for tc := range w.tasks {
		tc.cancel(fmt.Errorf("%w: worker %s was drained and its grace ran out", errHandedBack, w.id))
		ids = append(ids, tc.id)
	}
	slices.Sort(ids)
	return ids
}

// replicaSet names the pool replicas: the task runners (tasks.Runner).
type replicaSet interface {
	ID() string
	Replicas() []string
}

func (r *registry) setReplicas(rs replicaSet) {
	r.mu.Lock()
	defer r.mu.Unlock()
	r.replicas = rs
}

// replica names this replica, and others the replicas present.
func (r *registry) replica() (me string, others []string) {
	r.mu.Lock()
	rs := r.replicas
	r.mu.Unlock()
	if rs == nil {
		return "", nil
	}
	return rs.ID(), rs.Replicas()
}

// applyDrains follows the drains recorded in etcd; r.mu is not held.
func (r *registry) applyDrains(kvs []etcdwatch.KV, reset bool, _ int64) {
	r.mu.Lock()
	defer r.mu.Unlock()
	if reset {
		// A drain missing from the new snapshot went with its lease: kept
		// while its registration is still seen, as for a deletion.
		for id, d := range r.drains {
			if !slices.ContainsFunc(kvs, func(e etcdwatch.KV) bool { return e.Key == r.drainPrefix+id }) && !r.registeredUnder(id, d.Lease) {
				delete(r.drains, id)
			}
		}
	}
	for _, e := range kvs {
		id := strings.TrimPrefix(e.Key, r.drainPrefix)
		if e.Value == nil {
			// The lease went: the worker is leaving. It stays drained until
			// its registration goes too (apply), which may be seen later.
			if d, ok := r.drains[id]; ok && !r.registeredUnder(id, d.Lease) {
				delete(r.drains, id)
			}
			continue
		}
		var d drainRecord
		if err := json.Unmarshal(e.Value, &d); err != nil {
			r.log.Warn("ignoring an unreadable drain record", "key", e.Key, "err", err)
			continue
		}
		if d.Undone {
			if old, ok := r.drains[id]; ok && old.ID == d.ID {
				delete(r.drains, id)
				r.log.Info("worker no longer drained", "worker", id)
			}
			continue
		}
		if old, ok := r.drains[id]; ok && old.ID == d.ID {
			continue
		}
		r.drains[id] = d
		r.log.Info("worker drained: no new calls or tasks go to it", "worker", id, "grace_ends", time.UnixMilli(d.DeadlineMs))
		if r.runCtx != nil {
			ctx := r.runCtx
			r.drainers.Go(func() { r.carryOut(ctx, id, d) })
		}
	}
	r.rebuild()
}

// registeredUnder reports whether worker id is registered under lease;
// r.mu is held.
func (r *registry) registeredUnder(id string, lease int64) bool {
	w := r.workers[id]
	return w != nil && w.info.Load().LeaseId == lease
}

// drained reports whether w's registration is drained; r.mu is held.
func (r *registry) drained(w *worker) bool {
	d, ok := r.drains[w.id]
	return ok && d.Lease == w.info.Load().LeaseId
}

// stillDrained reports whether drain d of worker id is still recorded,
// and still of the registration it drained.
func (r *registry) stillDrained(id string, d drainRecord) bool {
	r.mu.Lock()
	defer r.mu.Unlock()
	return r.drains[id].ID == d.ID && r.registeredUnder(id, d.Lease)
}

// carryOut does this replica's part of drain d of worker id: it waits
// until nothing of its own runs on the worker or the grace runs out, hands
// back the tasks still running there, and reports.
func (r *registry) carryOut(ctx context.Context, id string, d drainRecord) {
	r.mu.Lock()
	w := r.workers[id]
	if w != nil && w.info.Load().LeaseId != d.Lease {
		w = nil // another registration: this drain is over
	}
	r.mu.Unlock()
	var rep drainReport
	if w != nil {
		started := w.taskIDs()
		calls := w.outstanding.Load() - int64(len(started))
		deadline := time.UnixMilli(d.DeadlineMs)
		tick := time.NewTicker(20 * time.Millisecond)
		for w.outstanding.Load() > 0 && time.Now().Before(deadline) && r.stillDrained(id, d) {
			select {
			case <-ctx.Done():
				tick.Stop()
				return
			case <-tick.C:
			}
		}
		tick.Stop()
		running := w.taskIDs()
		rep.CallsStillRunning = max(w.outstanding.Load()-int64(len(running)), 0)
		rep.CallsFinished = max(calls-rep.CallsStillRunning, 0)
		if r.stillDrained(id, d) {
			rep.TasksHandedBack = w.handBack()
		}
		for t := range started {
			if !running[t] {
				rep.TasksFinished++
			}
		}
		if len(rep.TasksHandedBack) > 0 {
			r.log.Info("drain's grace ran out: tasks handed back", "worker", id, "tasks", len(rep.TasksHandedBack))
		}
	}
	me, _ := r.replica()
	b, _ := json.Marshal(rep)
	wctx, cancel := context.WithTimeout(ctx, 5*time.Second)
	defer cancel()
	g, err := r.cli.Grant(wctx, drainReportTTL)
	if err == nil {
		_, err = r.cli.Put(wctx, r.reportKey(id, d.ID, me), string(b), clientv3.WithLease(g.ID))
	}
	if err != nil {
		r.log.Warn("recording this replica's part of a drain", "worker", id, "err", err)
	}
}

func (r *registry) reportKey(worker, drain, replica string) string {
	return r.reportPrefix + worker + "/" + drain + "/" + replica
}

// drainFor serves AdminService.DrainWorker and RegistryService.Drain.
func (r *registry) drainFor(ctx context.Context, req *v1.DrainRequest) (*v1.DrainResponse, error) {
	if err := names.WorkerID(req.WorkerId); err != nil {
		return nil, status.Error(codes.InvalidArgument, err.Error())
	}
	grace := time.Duration(req.GraceMs) * time.Millisecond
	switch {
	case req.GraceMs < 0:
		return nil, status.Errorf(codes.InvalidArgument, "grace %s is negative; give a grace of 0 (the default, %s) or more", grace, DefaultDrainGrace)
	case grace > maxDrainGrace:
		return nil, status.Errorf(codes.InvalidArgument, "grace %s is longer than the %s allowed; give a shorter one", grace, maxDrainGrace)
	case grace == 0:
		grace = DefaultDrainGrace
	}
	wkey, dkey := r.prefix+req.WorkerId, r.drainPrefix+req.WorkerId
	got, err := r.cli.Txn(ctx).Then(clientv3.OpGet(wkey), clientv3.OpGet(dkey)).Commit()
	if err != nil {
		return nil, serving.EtcdError(err)
	}
	wkvs, dkvs := got.Responses[0].GetResponseRange().Kvs, got.Responses[1].GetResponseRange().Kvs
	if len(wkvs) == 0 {
		return nil, status.Errorf(codes.NotFound, "no live worker %q (see `taskworker workers`)", req.WorkerId)
	}
	info, err := decodeRecord(wkvs[0].Value)
	if err != nil {
		return nil, status.Errorf(codes.Internal, "worker %s: unreadable record: %v", req.WorkerId, err)
	}
	var cur drainRecord
	draining := len(dkvs) > 0 && json.Unmarshal(dkvs[0].Value, &cur) == nil && cur.Lease == info.LeaseId && !cur.Undone
	if req.Undo {
		if draining {
			cur.Undone = true
			b, _ := json.Marshal(cur)
			// Only while the record is the one read: a drain meanwhile wins.
			tx, err := r.cli.Txn(ctx).If(clientv3.Compare(clientv3.ModRevision(dkey), "=", dkvs[0].ModRevision)).
				Then(clientv3.OpPut(dkey, string(b), clientv3.WithLease(clientv3.LeaseID(info.LeaseId)))).Commit()
			if err != nil {
				return nil, serving.EtcdError(err)
			}
			if !tx.Succeeded {
				return nil, status.Errorf(codes.Aborted, "worker %q was drained again, or left, while this undo ran; see `taskworker workers` and try again", req.WorkerId)
			}
		}
		return &v1.DrainResponse{WorkerId: req.WorkerId, WasDraining: draining}, nil
	}
	var idb [8]byte
	rand.Read(idb[:])
	now := time.Now()
	d := drainRecord{ID: hex.EncodeToString(idb[:]), Lease: info.LeaseId, StartedMs: now.UnixMilli(), DeadlineMs: now.Add(grace).UnixMilli()}
	b, _ := json.Marshal(d)
	tx, err := r.cli.Txn(ctx).If(clientv3.Compare(clientv3.LeaseValue(wkey), "=", clientv3.LeaseID(info.LeaseId))).
		Then(clientv3.OpPut(dkey, string(b), clientv3.WithLease(clientv3.LeaseID(info.LeaseId)))).Commit()
	if err != nil {
		return nil, serving.EtcdError(err)
	}
	if !tx.Succeeded {
		return nil, status.Errorf(codes.NotFound, "worker %q left or registered again meanwhile; see `taskworker workers` and try again", req.WorkerId)
	}
	resp := &v1.DrainResponse{WorkerId: req.WorkerId, DeadlineMs: d.DeadlineMs, WasDraining: draining,
		SoleFunctions: r.soleFunctions(req.WorkerId, info)}
	if req.NoWait {
		return resp, nil
	}
	me, want := r.replica()
	if len(want) == 0 {
		want = []string{me}
	}
	wait := time.NewTicker(100 * time.Millisecond)
	defer wait.Stop()
	give := time.UnixMilli(d.DeadlineMs).Add(drainReportWait)
	for {
		got, err := r.cli.Get(ctx, r.reportKey(req.WorkerId, d.ID, ""), clientv3.WithPrefix())
		if err != nil {
			return nil, serving.EtcdError(err)
		}
		reports := map[string]drainReport{}
		for _, kv := range got.Kvs {
			var rep drainReport
			if json.Unmarshal(kv.Value, &rep) == nil {
				reports[strings.TrimPrefix(string(kv.Key), r.reportKey(req.WorkerId, d.ID, ""))] = rep
			}
		}
		missing := 0
		for _, rp := range want {
			if _, ok := reports[rp]; !ok {
				missing++
			}
		}
		if missing == 0 || time.Now().After(give) || ctx.Err() != nil {
			for _, rep := range reports {
				resp.TasksFinished += rep.TasksFinished
				resp.TasksHandedBack = append(resp.TasksHandedBack, rep.TasksHandedBack...)
				resp.CallsFinished += rep.CallsFinished
				resp.CallsStillRunning += rep.CallsStillRunning
			}
			slices.Sort(resp.TasksHandedBack)
			resp.ReplicasReported, resp.ReplicasMissing = int32(len(reports)), int32(missing)
			return resp, nil
		}
		select {
		case <-ctx.Done():
		case <-wait.C:
		}
	}
}

// soleFunctions returns the functions of worker id (described by info)
// that no other live worker that is not drained serves.
func (r *registry) soleFunctions(id string, info *v1.WorkerInfo) []string {
	r.mu.Lock()
	defer r.mu.Unlock()
	var sole []string
	for _, f := range info.Functions {
		served := false
		for oid, w := range r.workers {
			if oid == id || r.drained(w) {
				continue
			}
			if slices.ContainsFunc(w.info.Load().Functions, func(g *v1.FunctionSpec) bool { return g.Name == f.Name }) {
				served = true
				break
			}
		}
		if !served {
			sole = append(sole, f.Name)
		}
	}
	slices.Sort(sole)
	return sole
}

// DrainWorker implements AdminService.DrainWorker.
func (s *adminService) DrainWorker(ctx context.Context, req *v1.DrainRequest) (*v1.DrainResponse, error) {
	return s.reg.drainFor(ctx, req)
}

// Drain implements RegistryService.Drain: the worker's certificate was
// checked to name req.WorkerId (workerPeer).
func (s *registryService) Drain(ctx context.Context, req *v1.DrainRequest) (*v1.DrainResponse, error) {
	if req.Undo {
		return nil, status.Error(codes.InvalidArgument, "a worker does not undo its own drain: it registers again when it restarts")
	}
	return s.reg.drainFor(ctx, req)
}
