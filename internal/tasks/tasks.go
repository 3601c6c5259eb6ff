package tasks

import (
	"context"
	"crypto/rand"
	"encoding/hex"
	"errors"
	"fmt"
	"log/slog"
	"strconv"
	"strings"
	"sync"
	"sync/atomic"
	"time"

	clientv3 "go.etcd.io/etcd/client/v3"
	"google.golang.org/grpc/codes"
	"google.golang.org/grpc/status"
	"google.golang.org/protobuf/proto"

	v1 "github.com/hivemind/taskworker/api/taskworker/v1"
	"github.com/hivemind/taskworker/internal/quota"
)

// Caller calls a function for user the way the pool's router does for a
// client, and is how a Runner runs a task's attempt.
type Caller func(ctx context.Context, user string, req *v1.FunctionCallRequest) (*v1.FunctionCallResponse, error)

// Config holds a Runner's settings.
type Config struct {
	// Prefix namespaces the etcd keys (the pool's prefix).
	Prefix string
	// Replica names this pool replica in claims (for logs and `task`).
	Replica string
	// Slots bounds the calls this replica's tasks make at once (an
	// attempt whose call has returned waits for its outcome's write
	// without a slot).
	Slots int
	// LeaseTTL is how long this replica's claims outlive it.
	LeaseTTL time.Duration
	// Keep is how long ended tasks are kept.
	Keep time.Duration
	// DefaultAttempts and DefaultBackoff fill a submit's zero RetryPolicy.
	DefaultAttempts int32
	DefaultBackoff  time.Duration
	// Limits returns a user's quotas: Tasks bounds the user's tasks that
	// have not ended (nil: no bound). Checked, then written: concurrent
	// submits of one user may pass the bound by a few, and more through
	// several replicas (Store.underQuota).
	Limits func(ctx context.Context, user string) (quota.Limits, error)
	// SweepInterval is how often running tasks are checked for lost claims,
	// besides when a claim is seen to go.
	SweepInterval time.Duration
	Logger        *slog.Logger
}

// DefaultConfig returns the settings of a pool's runner.
func DefaultConfig() Config {
	return Config{Prefix: "/taskworker/", Slots: 64, LeaseTTL: 5 * time.Second, Keep: 10 * time.Minute,
		DefaultAttempts: 3, DefaultBackoff: 200 * time.Millisecond, SweepInterval: 5 * time.Second}
}

// Errors of the store, mapped to gRPC codes by the server.
var (
	ErrNotFound = errors.New("no such task")
	ErrInvalid  = errors.New("invalid task request")
)

// invalid marks err as ErrInvalid without changing its text.
type invalid struct{ error }

func (e invalid) Unwrap() []error { return []error{e.error, ErrInvalid} }

func invalidf(format string, args ...any) error { return invalid{fmt.Errorf(format, args...)} }

type keys struct{ p string }

func (k keys) record(owner, id string) string { return k.p + "u/" + owner + "/" + id }
func (k keys) user(owner string) string       { return k.p + "u/" + owner + "/" }
func (k keys) queue(id string) string         { return k.p + "queue/" + id }
func (k keys) queues() string                 { return k.p + "queue/" }
func (k keys) replica(lease string) string    { return k.p + "replica/" + lease }
func (k keys) replicas() string               { return k.p + "replica/" }
func (k keys) running(id string) string       { return k.p + "running/" + id }
func (k keys) runnings() string               { return k.p + "running/" }
func (k keys) cancel(id string) string        { return k.p + "cancel/" + id }
func (k keys) cancels() string                { return k.p + "cancel/" }
func (k keys) idem(owner, key string) string {
	return k.p + "idem/" + owner + "/" + hex.EncodeToString([]byte(key))
}

// newID returns a task id: the time in nanoseconds then randomness, in hex,
// so ids sort by submission.
func newID(now time.Time) string {
	var r [4]byte
	_, _ = rand.Read(r[:])
	return fmt.Sprintf("%016x%s", now.UnixNano(), hex.EncodeToString(r[:]))
}

// CheckID refuses what cannot be a task id.
func CheckID(id string) error {
	if len(id) != 24 {
		return invalidf("task id %q is not a task id (24 hex digits, as submit prints)", id)
	}
	if _, err := hex.DecodeString(id); err != nil {
		return invalidf("task id %q is not a task id (24 hex digits, as submit prints)", id)
	}
	return nil
}

// queueEntry is a queue key's value: the owner and the time before which
// the task may not start.
func queueValue(owner string, notBefore int64) string {
	return owner + " " + strconv.FormatInt(notBefore, 10)
}

func parseQueueValue(v []byte) (owner string, notBefore int64) {
	o, nb, _ := strings.Cut(string(v), " ")
	n, _ := strconv.ParseInt(nb, 10, 64)
	return o, n
}

// Ended reports whether a task is in a final state.
func Ended(s v1.TaskState) bool {
	return s == v1.TaskState_TASK_STATE_SUCCEEDED || s == v1.TaskState_TASK_STATE_FAILED || s == v1.TaskState_TASK_STATE_CANCELLED
}

// Store reads and writes task records; Runner and Server share one.
type Store struct {
	cli   *clientv3.Client
	k     keys
	cfg   Config
	keep  *leases
	batch *batcher
	waits *waiters
	// runner is this replica's runner, which takes a task submitted here
	// at once when it has a free slot.
	runner atomic.Pointer[Runner]

	countsMu sync.Mutex
	counts   map[string]*activeCount // by owner
}

// NewStore returns a store over cli.
func NewStore(cli *clientv3.Client, cfg Config) *Store {
	k := keys{cfg.Prefix + "tasks/"}
	return &Store{cli: cli, k: k, cfg: cfg, keep: &leases{cli: cli, keep: cfg.Keep}, batch: &batcher{cli: cli},
		waits: newWaiters(cli, k.p+"u/"), counts: map[string]*activeCount{}}
}

// Submit records a task for owner and returns it, or the task an earlier
// submit with the same idempotency key made (existing).
func (s *Store) Submit(ctx context.Context, owner string, req *v1.SubmitRequest, args []byte) (t *v1.Task, existing bool, err error) {
	retry := req.GetRetry()
	if retry == nil {
		retry = &v1.RetryPolicy{}
	}
	if err := s.checkPolicy(retry, req.TimeoutMs); err != nil {
		return nil, false, err
	}
	if len(req.IdempotencyKey) > 256 {
		return nil, false, invalidf("idempotency key is %d bytes; at most 256", len(req.IdempotencyKey))
	}
	if s.cfg.Limits != nil {
		l, err := s.cfg.Limits(ctx, owner)
		if err != nil {
			return nil, false, err
		}
		if l.Tasks > 0 {
			if err := s.underQuota(ctx, owner, l.Tasks); err != nil {
				return nil, false, err
			}
		}
	}
	t, ops, err := s.newTask(owner, req.FunctionName, args, retry, req.TimeoutMs, req.IdempotencyKey, time.Now())
	if err != nil {
		return nil, false, err
	}
	var conds []cond
	if req.IdempotencyKey != "" {
		conds = append(conds, cond{key: s.k.idem(owner, req.IdempotencyKey)})
	}
	if r := s.runner.Load(); r != nil {
		if t, ok, err := r.submitAndClaim(ctx, t, conds); ok || err != nil {
			return t, false, err
		}
	}
	for {
		w := newWrite(conds, ops...)
		if err := s.batch.do(ctx, w); err != nil {
			return nil, false, fmt.Errorf("recording the task in etcd: %w", err)
		}
		if w.err != nil {
			return nil, false, fmt.Errorf("recording the task: %w", w.err)
		}
		if w.ok {
			return t, false, nil
		}
		resp, err := s.cli.Get(ctx, s.k.idem(owner, req.IdempotencyKey))
		if err != nil {
			return nil, false, fmt.Errorf("reading the idempotency key: %w", err)
		}
		if len(resp.Kvs) == 0 {
			continue // it expired meanwhile
		}
		first, _, err := s.Get(ctx, owner, string(resp.Kvs[0].Value))
		if errors.Is(err, ErrNotFound) {
			continue
		}
		return first, true, err
	}
}

// checkPolicy refuses a retry policy or time bound that cannot work.
func (s *Store) checkPolicy(retry *v1.RetryPolicy, timeoutMs int64) error {
	switch {
	case retry.MaxAttempts < 0 || retry.MaxAttempts > 100:
		return invalidf("max_attempts %d: give 1 to 100, or 0 for the default of %d", retry.MaxAttempts, s.cfg.DefaultAttempts)
	case retry.BackoffMs < 0 || retry.BackoffMs > int64(time.Hour/time.Millisecond):
		return invalidf("backoff %d ms: give 0 (the default) up to an hour", retry.BackoffMs)
	case timeoutMs < 0:
		return invalidf("timeout %d ms is negative", timeoutMs)
	}
	return nil
}

// newTask returns a new queued task and the etcd operations that record
// it and its idempotency key.
func (s *Store) newTask(owner, function string, args []byte, retry *v1.RetryPolicy, timeoutMs int64, key string, now time.Time) (*v1.Task, []clientv3.Op, error) {
	retry = proto.Clone(retry).(*v1.RetryPolicy)
	if retry.MaxAttempts == 0 {
		retry.MaxAttempts = s.cfg.DefaultAttempts
	}
	if retry.BackoffMs == 0 {
		retry.BackoffMs = s.cfg.DefaultBackoff.Milliseconds()
	}
	t := &v1.Task{Id: newID(now), Owner: owner, FunctionName: function, Args: args, State: v1.TaskState_TASK_STATE_QUEUED,
		Retry: retry, TimeoutMs: timeoutMs, IdempotencyKey: key, CreatedAtMs: now.UnixMilli()}
	val, err := proto.Marshal(t)
	if err != nil {
		return nil, nil, err
	}
	ops := []clientv3.Op{clientv3.OpPut(s.k.record(owner, t.Id), string(val)), clientv3.OpPut(s.k.queue(t.Id), queueValue(owner, 0)),
		clientv3.OpPut(s.k.active(owner, t.Id), "")}
	if key != "" {
		ops = append(ops, clientv3.OpPut(s.k.idem(owner, key), t.Id))
	}
	return t, ops, nil
}

// Get returns owner's task id and its record's revision.
func (s *Store) Get(ctx context.Context, owner, id string) (*v1.Task, int64, error) {
	if err := CheckID(id); err != nil {
		return nil, 0, err
	}
	resp, err := s.cli.Get(ctx, s.k.record(owner, id))
	if err != nil {
		return nil, 0, fmt.Errorf("reading the task from etcd: %w", err)
	}
	if len(resp.Kvs) == 0 {
		return nil, 0, fmt.Errorf("%w %s (tasks are kept for %s after they end)", ErrNotFound, id, s.cfg.Keep)
	}
	t := &v1.Task{}
	if err := proto.Unmarshal(resp.Kvs[0].Value, t); err != nil {
		return nil, 0, fmt.Errorf("task record %s is damaged: %w", id, err)
	}
	return t, resp.Kvs[0].ModRevision, nil
}

// List returns owner's tasks, newest first, matching state and function
// when they are set, without their args and results.
func (s *Store) List(ctx context.Context, owner string, state v1.TaskState, function string, limit int) ([]*v1.Task, error) {
	if limit <= 0 || limit > 1000 {
		limit = 100
	}
	var out []*v1.Task
	end := clientv3.GetPrefixRangeEnd(s.k.user(owner))
	for len(out) < limit {
		resp, err := s.cli.Get(ctx, s.k.user(owner), clientv3.WithRange(end), clientv3.WithSort(clientv3.SortByKey, clientv3.SortDescend), clientv3.WithLimit(256))
		if err != nil {
			return nil, fmt.Errorf("listing tasks in etcd: %w", err)
		}
		for _, kv := range resp.Kvs {
			t := &v1.Task{}
			if proto.Unmarshal(kv.Value, t) != nil {
				continue
			}
			if (state == v1.TaskState_TASK_STATE_UNSPECIFIED || t.State == state) && (function == "" || t.FunctionName == function) {
				t.Args, t.Result = nil, nil
				out = append(out, t)
				if len(out) == limit {
					break
				}
			}
		}
		if !resp.More || len(resp.Kvs) == 0 {
			break
		}
		end = string(resp.Kvs[len(resp.Kvs)-1].Key) // exclusive: the next page is below it
	}
	return out, nil
}

// countLimit bounds the records one Count reads.
const countLimit = 100_000

// Count counts owner's tasks by state, in one pass over their records,
// newest first; truncated is set when there were more than countLimit.
func (s *Store) Count(ctx context.Context, owner string) (counts map[v1.TaskState]int64, truncated bool, err error) {
	counts = map[v1.TaskState]int64{}
	end, read := clientv3.GetPrefixRangeEnd(s.k.user(owner)), 0
	for {
		resp, err := s.cli.Get(ctx, s.k.user(owner), clientv3.WithRange(end), clientv3.WithSort(clientv3.SortByKey, clientv3.SortDescend),
			clientv3.WithLimit(1024), clientv3.WithSerializable())
		if err != nil {
			return nil, false, fmt.Errorf("counting tasks in etcd: %w", err)
		}
		for _, kv := range resp.Kvs {
			t := &v1.Task{}
			if proto.Unmarshal(kv.Value, t) == nil {
				counts[t.State]++
			}
		}
		read += len(resp.Kvs)
		if !resp.More || len(resp.Kvs) == 0 {
			return counts, false, nil
		}
		if read >= countLimit {
			return counts, true, nil
		}
		end = string(resp.Kvs[len(resp.Kvs)-1].Key)
	}
}

// Cancel cancels owner's task id: a queued one at once; a running one is
// marked, and the replica running it cancels its call.
func (s *Store) Cancel(ctx context.Context, owner, id string) (*v1.Task, error) {
	for {
		t, rev, err := s.Get(ctx, owner, id)
		if err != nil {
			return nil, err
		}
		if Ended(t.State) || t.CancelRequested {
			return t, nil
		}
		rk := s.k.record(owner, id)
		var ops []clientv3.Op
		conds := []clientv3.Cmp{clientv3.Compare(clientv3.ModRevision(rk), "=", rev)}
		if t.State == v1.TaskState_TASK_STATE_QUEUED {
			t.State, t.EndedAtMs = v1.TaskState_TASK_STATE_CANCELLED, time.Now().UnixMilli()
			lease, err := s.keep.lease(ctx)
			if err != nil {
				return nil, err
			}
			val, _ := proto.Marshal(t)
			ops = append(ops, clientv3.OpPut(rk, string(val), clientv3.WithLease(lease)), clientv3.OpDelete(s.k.queue(id)),
				clientv3.OpDelete(s.k.active(owner, id)))
			ops = append(ops, s.idemOps(t, lease)...)
		} else {
			t.CancelRequested = true
			val, _ := proto.Marshal(t)
			ops = append(ops, clientv3.OpPut(rk, string(val)), clientv3.OpPut(s.k.cancel(id), owner))
		}
		tx, err := s.cli.Txn(ctx).If(conds...).Then(ops...).Commit()
		if err != nil {
			return nil, fmt.Errorf("cancelling in etcd: %w", err)
		}
		if tx.Succeeded {
			return t, nil
		}
	}
}

// idemOps makes a task's idempotency key expire with its ended record.
func (s *Store) idemOps(t *v1.Task, lease clientv3.LeaseID) []clientv3.Op {
	if t.IdempotencyKey == "" {
		return nil
	}
	return []clientv3.Op{clientv3.OpPut(s.k.idem(t.Owner, t.IdempotencyKey), t.Id, clientv3.WithLease(lease))}
}

// leases hands out the etcd leases ended tasks are kept under: one per
// span of keep/4 (at least a second, at most an hour) in which tasks end,
// lasting keep past that span's end, so that a task is kept between keep
// and 1.25 keep, and etcd holds a few leases, not one per task.
type leases struct {
	cli  *clientv3.Client
	keep time.Duration

	mu     sync.Mutex
	span   int64
	leased clientv3.LeaseID
}

// keepSpan is the span of time whose ended tasks share a lease.
func keepSpan(keep time.Duration) time.Duration {
	return min(max(keep/4, time.Second), time.Hour)
}

func (l *leases) lease(ctx context.Context) (clientv3.LeaseID, error) {
	width := keepSpan(l.keep)
	span := time.Now().UnixNano() / int64(width)
	l.mu.Lock()
	defer l.mu.Unlock()
	if span == l.span && l.leased != 0 {
		return l.leased, nil
	}
	g, err := l.cli.Grant(ctx, int64((l.keep+width+time.Second-1)/time.Second))
	if err != nil {
		return 0, fmt.Errorf("a lease for ended tasks: %w", err)
	}
	l.span, l.leased = span, g.ID
	return g.ID, nil
}

// statusOf maps the store's errors to gRPC statuses.
func statusOf(err error) error {
	switch {
	case err == nil:
		return nil
	case errors.Is(err, ErrInvalid):
		return status.Error(codes.InvalidArgument, err.Error())
	case errors.Is(err, ErrNotFound):
		return status.Error(codes.NotFound, err.Error())
	case errors.Is(err, context.DeadlineExceeded), errors.Is(err, context.Canceled):
		return status.FromContextError(err).Err()
	}
	if _, ok := status.FromError(err); ok {
		return err
	}
	return status.Errorf(codes.Unavailable, "%v; try again when etcd is reachable", err)
}

func (k keys) schedule(owner, name string) string { return k.p + "sched/" + owner + "/" + name }
func (k keys) schedules() string                  { return k.p + "sched/" }

// active marks a task that has not ended, under its owner: what the tasks
// quota counts.
func (k keys) active(owner, id string) string { return k.p + "active/" + owner + "/" + id }

// activeCount is a replica's recent count of an owner's tasks that have
// not ended, with the submits it let through since.
type activeCount struct {
	n  int64
	at time.Time
}

// recountAfter is how long a count far from its owner's limit is trusted.
const recountAfter = 250 * time.Millisecond

// underQuota refuses a submit that would take owner's tasks past limit. A
// count read less than recountAfter ago, plus this replica's submits since,
// is trusted while under half the limit; nearer the limit every submit
// counts again. Submits through other replicas within recountAfter may
// therefore pass a limit of a busy user.
func (s *Store) underQuota(ctx context.Context, owner string, limit int64) error {
	now := time.Now()
	s.countsMu.Lock()
	if c := s.counts[owner]; c != nil && now.Sub(c.at) < recountAfter && c.n < limit/2 {
		c.n++
		s.countsMu.Unlock()
		return nil
	}
	s.countsMu.Unlock()
	n, err := s.Active(ctx, owner)
	if err != nil {
		return err
	}
	if n >= limit {
		return quota.Exceeded(owner, quota.Tasks, limit, n, 1)
	}
	s.countsMu.Lock()
	defer s.countsMu.Unlock()
	for o, c := range s.counts {
		if now.Sub(c.at) >= recountAfter {
			delete(s.counts, o)
		}
	}
	s.counts[owner] = &activeCount{n: n + 1, at: now}
	return nil
}

// Active returns how many of owner's tasks have not ended.
func (s *Store) Active(ctx context.Context, owner string) (int64, error) {
	resp, err := s.cli.Get(ctx, s.k.p+"active/"+owner+"/", clientv3.WithPrefix(), clientv3.WithCountOnly())
	if err != nil {
		return 0, fmt.Errorf("counting tasks in etcd: %w", err)
	}
	return resp.Count, nil
}
