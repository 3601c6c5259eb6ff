package tasks_test

import (
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"strings"
	"sync"
	"testing"
	"time"

	clientv3 "go.etcd.io/etcd/client/v3"
	"google.golang.org/grpc/codes"
	"google.golang.org/grpc/status"
	"google.golang.org/protobuf/proto"

	v1 "github.com/hivemind/taskworker/api/taskworker/v1"
	"github.com/hivemind/taskworker/internal/etcdserver"
	"github.com/hivemind/taskworker/internal/quota"
	"github.com/hivemind/taskworker/internal/tasks"
)

func startEtcd(t testing.TB) []string {
	t.Helper()
	cfg := etcdserver.DefaultConfig(t.TempDir())
	cfg.TickMs, cfg.ElectionMs = 10, 100
	srv, err := etcdserver.Start(context.Background(), cfg)
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(srv.Close)
	return srv.Endpoints()
}

func client(t testing.TB, endpoints []string) *clientv3.Client {
	t.Helper()
	cli, err := clientv3.New(clientv3.Config{Endpoints: endpoints, DialTimeout: 5 * time.Second})
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { cli.Close() })
	return cli
}

func config(replica string) tasks.Config {
	cfg := tasks.DefaultConfig()
	cfg.Prefix, cfg.Replica = "/tw/", replica
	cfg.LeaseTTL, cfg.SweepInterval = time.Second, 200*time.Millisecond
	cfg.DefaultBackoff = 10 * time.Millisecond
	return cfg
}

// runner starts a runner until the test ends (or stop is called).
func runner(t testing.TB, cli *clientv3.Client, replica string, call tasks.Caller) (r *tasks.Runner, stop func()) {
	t.Helper()
	return runnerOn(t, tasks.NewStore(cli, config(replica)), call)
}

// runnerOn starts a runner over s: the tasks submitted through s are
// those a pool replica's own clients submit.
func runnerOn(t testing.TB, s *tasks.Store, call tasks.Caller) (r *tasks.Runner, stop func()) {
	t.Helper()
	r = tasks.NewRunner(s, call)
	ctx, cancel := context.WithCancel(context.Background())
	ready, done := make(chan struct{}), make(chan struct{})
	go func() {
		defer close(done)
		if err := r.Run(ctx, ready); err != nil && ctx.Err() == nil {
			t.Error(err)
		}
	}()
	<-ready
	var once sync.Once
	stop = func() { once.Do(func() { cancel(); <-done }) }
	t.Cleanup(stop)
	return r, stop
}

func wait(t testing.TB, s *tasks.Store, owner, id string) *v1.Task {
	t.Helper()
	ctx, cancel := context.WithTimeout(context.Background(), 30*time.Second)
	defer cancel()
	task, err := s.Wait(ctx, owner, id)
	if err != nil {
		t.Fatalf("waiting for %s: %v", id, err)
	}
	return task
}

func submit(t testing.TB, s *tasks.Store, owner string, req *v1.SubmitRequest) *v1.Task {
	t.Helper()
	task, _, err := s.Submit(context.Background(), owner, req, req.Args)
	if err != nil {
		t.Fatal(err)
	}
	return task
}

// echo answers every call with its task id and attempt.
func echo(_ context.Context, _ string, req *v1.FunctionCallRequest) (*v1.FunctionCallResponse, error) {
	return &v1.FunctionCallResponse{Result: fmt.Appendf(nil, "%q", fmt.Sprintf("%s/%d", req.TaskId, req.TaskAttempt)), WorkerId: "w1"}, nil
}

// Tasks end as their attempts and retry policy say, whether submitted
// through another replica (queued, then claimed) or through the replica
// that runs them (claimed as they are recorded).
func TestTaskOutcomes(t *testing.T) {
	for _, where := range []string{"elsewhere", "on the runner's replica"} {
		t.Run("submitted "+where, func(t *testing.T) { testTaskOutcomes(t, where != "elsewhere") })
	}
}

func testTaskOutcomes(t *testing.T, local bool) {
	cli := client(t, startEtcd(t))
	s := tasks.NewStore(cli, config("p1"))
	start := func(call tasks.Caller) {
		if local {
			runnerOn(t, s, call)
		} else {
			runner(t, cli, "p1", call)
		}
	}
	// The arguments say how many attempts fail: [n].
	start(func(ctx context.Context, user string, req *v1.FunctionCallRequest) (*v1.FunctionCallResponse, error) {
		var fail []int32
		_ = json.Unmarshal(req.Args, &fail)
		if len(fail) == 1 && req.TaskAttempt <= fail[0] {
			code := codes.Unavailable
			if req.FunctionName == "buggy" {
				code = codes.Unknown
			}
			return nil, status.Error(code, "failed on purpose")
		}
		return echo(ctx, user, req)
	})
	tests := []struct {
		name     string
		function string
		fail     int32
		retry    *v1.RetryPolicy
		state    v1.TaskState
		attempts int
	}{
		{"succeeds", "ok", 0, nil, v1.TaskState_TASK_STATE_SUCCEEDED, 1},
		{"worker lost once, retried", "flaky", 1, nil, v1.TaskState_TASK_STATE_SUCCEEDED, 2},
		{"worker lost every time", "flaky", 10, nil, v1.TaskState_TASK_STATE_FAILED, 3},
		{"the function's error is not retried", "buggy", 1, nil, v1.TaskState_TASK_STATE_FAILED, 1},
		{"unless the policy says so", "buggy", 1, &v1.RetryPolicy{RetryErrors: true}, v1.TaskState_TASK_STATE_SUCCEEDED, 2},
		{"max attempts", "flaky", 10, &v1.RetryPolicy{MaxAttempts: 5}, v1.TaskState_TASK_STATE_FAILED, 5},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			task := submit(t, s, "bob", &v1.SubmitRequest{FunctionName: tt.function, Retry: tt.retry, Args: fmt.Appendf(nil, "[%d]", tt.fail)})
			got := wait(t, s, "bob", task.Id)
			if got.State != tt.state || len(got.Attempts) != tt.attempts {
				t.Fatalf("state %v after %d attempts; want %v after %d: %v", got.State, len(got.Attempts), tt.state, tt.attempts, got.Attempts)
			}
			if tt.state == v1.TaskState_TASK_STATE_SUCCEEDED && string(got.Result) != fmt.Sprintf("%q", fmt.Sprintf("%s/%d", task.Id, tt.attempts)) {
				t.Fatalf("result %s: the function did not see its task id and attempt", got.Result)
			}
		})
	}
}

func TestIdempotencyKeyAndOwnership(t *testing.T) {
	cli := client(t, startEtcd(t))
	s := tasks.NewStore(cli, config("p1"))
	ctx := context.Background()
	req := &v1.SubmitRequest{FunctionName: "report", IdempotencyKey: "daily-2026-12-02"}
	first, existing, err := s.Submit(ctx, "bob", req, nil)
	if err != nil || existing {
		t.Fatal(err, existing)
	}
	again, existing, err := s.Submit(ctx, "bob", req, nil)
	if err != nil || !existing || again.Id != first.Id {
		t.Fatalf("second submit with the key: %v, existing %v, %v", again.GetId(), existing, err)
	}
	// Another user's key is another key; and bob's task is not eve's.
	eves, existing, err := s.Submit(ctx, "eve", req, nil)
	if err != nil || existing || eves.Id == first.Id {
		t.Fatalf("eve's submit with bob's key: %v, %v", existing, err)
	}
	for _, op := range []func() error{
		func() error { _, _, err := s.Get(ctx, "eve", first.Id); return err },
		func() error { _, err := s.Cancel(ctx, "eve", first.Id); return err },
		func() error { _, err := s.Wait(ctx, "eve", first.Id); return err },
	} {
		if err := op(); !errors.Is(err, tasks.ErrNotFound) {
			t.Errorf("eve reached bob's task: %v", err)
		}
	}
	list, err := s.List(ctx, "bob", v1.TaskState_TASK_STATE_QUEUED, "report", 0)
	if err != nil || len(list) != 1 || list[0].Id != first.Id {
		t.Fatalf("bob's queued report tasks: %v, %v", list, err)
	}
	if _, _, err := s.Get(ctx, "bob", "../../x"); !errors.Is(err, tasks.ErrInvalid) {
		t.Fatalf("a bad id: %v", err)
	}
}

func TestCancel(t *testing.T) {
	cli := client(t, startEtcd(t))
	s := tasks.NewStore(cli, config("p1"))
	ctx := context.Background()

	// Queued: cancelled at once, never runs.
	queuedTask := submit(t, s, "bob", &v1.SubmitRequest{FunctionName: "slow"})
	if got, err := s.Cancel(ctx, "bob", queuedTask.Id); err != nil || got.State != v1.TaskState_TASK_STATE_CANCELLED {
		t.Fatalf("cancel a queued task: %v, %v", got.GetState(), err)
	}

	// Running: its call's context is cancelled.
	started, sawCancel := make(chan string, 1), make(chan error, 1)
	runner(t, cli, "p1", func(ctx context.Context, _ string, req *v1.FunctionCallRequest) (*v1.FunctionCallResponse, error) {
		if req.TaskId == queuedTask.Id {
			t.Error("a cancelled queued task ran")
		}
		started <- req.TaskId
		<-ctx.Done()
		sawCancel <- ctx.Err()
		return nil, status.FromContextError(ctx.Err()).Err()
	})
	running := submit(t, s, "bob", &v1.SubmitRequest{FunctionName: "slow"})
	if id := <-started; id != running.Id {
		t.Fatalf("started %s", id)
	}
	if _, err := s.Cancel(ctx, "bob", running.Id); err != nil {
		t.Fatal(err)
	}
	if err := <-sawCancel; !errors.Is(err, context.Canceled) {
		t.Fatalf("the call's context: %v", err)
	}
	if got := wait(t, s, "bob", running.Id); got.State != v1.TaskState_TASK_STATE_CANCELLED {
		t.Fatalf("state %v", got.State)
	}
}

// A replica that stops answering etcd loses its claims: another replica
// runs its tasks again, and the lost attempt does not count.
func TestLostReplicaTasksRunElsewhere(t *testing.T) {
	endpoints := startEtcd(t)
	s := tasks.NewStore(client(t, endpoints), config("p2"))
	lostCli := client(t, endpoints)
	started := make(chan struct{}, 10)
	runner(t, lostCli, "p1", func(ctx context.Context, _ string, req *v1.FunctionCallRequest) (*v1.FunctionCallResponse, error) {
		started <- struct{}{}
		<-ctx.Done() // hangs, as on a replica cut off
		return nil, status.FromContextError(ctx.Err()).Err()
	})
	task := submit(t, s, "bob", &v1.SubmitRequest{FunctionName: "job", Retry: &v1.RetryPolicy{MaxAttempts: 1}})
	<-started
	// p1 is cut off from etcd: its lease ends within its TTL.
	lostCli.Close()
	runner(t, client(t, endpoints), "p2", echo)
	got := wait(t, s, "bob", task.Id)
	if got.State != v1.TaskState_TASK_STATE_SUCCEEDED || len(got.Attempts) != 2 || !got.Attempts[0].HandedBack {
		t.Fatalf("state %v, attempts %v", got.State, got.Attempts)
	}
}

// Two replicas share a queue: every task runs exactly once when nothing
// fails, owners taking turns.
func TestTwoReplicasRunEachTaskOnce(t *testing.T) {
	endpoints := startEtcd(t)
	s := tasks.NewStore(client(t, endpoints), config("p1"))
	var mu sync.Mutex
	runs := map[string]int{}
	count := func(ctx context.Context, user string, req *v1.FunctionCallRequest) (*v1.FunctionCallResponse, error) {
		mu.Lock()
		runs[req.TaskId]++
		mu.Unlock()
		time.Sleep(time.Millisecond)
		return echo(ctx, user, req)
	}
	runner(t, client(t, endpoints), "p1", count)
	runner(t, client(t, endpoints), "p2", count)
	var ids []string
	for i := range 200 {
		owner := []string{"alice", "bob"}[i%2]
		ids = append(ids, owner+" "+submit(t, s, owner, &v1.SubmitRequest{FunctionName: "f"}).Id)
	}
	for _, oi := range ids {
		var owner, id string
		fmt.Sscan(oi, &owner, &id)
		if got := wait(t, s, owner, id); got.State != v1.TaskState_TASK_STATE_SUCCEEDED {
			t.Fatalf("%s: %v", id, got.State)
		}
	}
	mu.Lock()
	defer mu.Unlock()
	for id, n := range runs {
		if n != 1 {
			t.Errorf("task %s ran %d times", id, n)
		}
	}
	if len(runs) != 200 {
		t.Errorf("%d tasks ran, want 200", len(runs))
	}
}

// Stopping a replica hands its running tasks back; they run elsewhere and
// the handed-back attempt does not count.
func TestStoppingReplicaHandsTasksBack(t *testing.T) {
	endpoints := startEtcd(t)
	s := tasks.NewStore(client(t, endpoints), config("p1"))
	started := make(chan struct{}, 10)
	_, stop := runner(t, client(t, endpoints), "p1", func(ctx context.Context, _ string, req *v1.FunctionCallRequest) (*v1.FunctionCallResponse, error) {
		started <- struct{}{}
		<-ctx.Done()
		return nil, status.FromContextError(ctx.Err()).Err()
	})
	task := submit(t, s, "bob", &v1.SubmitRequest{FunctionName: "job", Retry: &v1.RetryPolicy{MaxAttempts: 1}})
	<-started
	stop()
	runner(t, client(t, endpoints), "p2", echo)
	got := wait(t, s, "bob", task.Id)
	if got.State != v1.TaskState_TASK_STATE_SUCCEEDED || len(got.Attempts) != 2 || !got.Attempts[0].HandedBack {
		t.Fatalf("state %v, attempts %v", got.State, got.Attempts)
	}
}

// Three replicas, one schedule every second: each tick submits exactly one
// task, whichever replica is elected, also when the elected one stops.
func TestScheduleFiresOncePerTick(t *testing.T) {
	endpoints := startEtcd(t)
	s := tasks.NewStore(client(t, endpoints), config("p0"))
	var stops []func()
	for i := range 3 {
		_, stop := runner(t, client(t, endpoints), fmt.Sprintf("p%d", i+1), echo)
		stops = append(stops, stop)
	}
	ctx := context.Background()
	sc, err := s.PutSchedule(ctx, "bob", &v1.Schedule{Name: "tick", FunctionName: "f", EveryMs: 1000})
	if err != nil {
		t.Fatal(err)
	}
	time.Sleep(3500 * time.Millisecond)
	stops[0]() // the first elected, most likely; another takes over
	stops[1]()
	time.Sleep(3500 * time.Millisecond)
	if err := s.DeleteSchedule(ctx, "bob", "tick"); err != nil {
		t.Fatal(err)
	}
	list, err := s.List(ctx, "bob", v1.TaskState_TASK_STATE_UNSPECIFIED, "f", 1000)
	if err != nil {
		t.Fatal(err)
	}
	ticks := map[string]int{}
	for _, task := range list {
		ticks[task.IdempotencyKey]++
	}
	for k, n := range ticks {
		if n != 1 {
			t.Errorf("tick %s ran %d times", k, n)
		}
	}
	// About seven ticks passed; a replica's stop may delay one.
	if len(ticks) < 5 || len(ticks) > 8 {
		t.Errorf("%d ticks fired in 7 s: %v", len(ticks), ticks)
	}
	for i := range len(ticks) {
		want := fmt.Sprintf("schedule/tick/%d", sc.CreatedAtMs+int64(i+1)*1000)
		if ticks[want] != 1 {
			t.Errorf("tick %d (%s) did not fire: %v", i+1, want, ticks)
		}
	}
}

func TestBadSchedulesAreRefused(t *testing.T) {
	s := tasks.NewStore(client(t, startEtcd(t)), config("p0"))
	for _, tc := range []struct {
		sc   *v1.Schedule
		want string
	}{
		{&v1.Schedule{Name: "a", FunctionName: "f"}, "not neither"},
		{&v1.Schedule{Name: "a", FunctionName: "f", EveryMs: 1000, Cron: "* * * * *"}, "not both"},
		{&v1.Schedule{Name: "a", FunctionName: "f", EveryMs: 10}, "shortest is one second"},
		{&v1.Schedule{Name: "a", FunctionName: "f", Cron: "every day"}, "cron expression"},
		{&v1.Schedule{Name: "a/b", FunctionName: "f", EveryMs: 1000}, "schedule name"},
		{&v1.Schedule{Name: "a", FunctionName: "", EveryMs: 1000}, "function"},
	} {
		_, err := s.PutSchedule(context.Background(), "bob", tc.sc)
		if !errors.Is(err, tasks.ErrInvalid) || !strings.Contains(err.Error(), tc.want) {
			t.Errorf("PutSchedule(%v) = %v, want an error with %q", tc.sc, err, tc.want)
		}
	}
	sc, err := s.PutSchedule(context.Background(), "bob", &v1.Schedule{Name: "nightly", FunctionName: "f", Cron: "30 2 * * *"})
	if err != nil {
		t.Fatal(err)
	}
	if next := time.UnixMilli(sc.NextRunAtMs).UTC(); next.Hour() != 2 || next.Minute() != 30 {
		t.Errorf("next run of 30 2 * * *: %v", next)
	}
}

// The tasks quota counts a user's tasks that have not ended: the submit
// that crosses it is refused, naming the quota and the use, and stores
// nothing; once a task ends there is room again.
func TestTasksQuota(t *testing.T) {
	endpoints := startEtcd(t)
	cfg := config("p1")
	cfg.Limits = func(_ context.Context, user string) (quota.Limits, error) {
		if user == "bob" {
			return quota.Limits{Tasks: 2}, nil
		}
		return quota.Limits{}, nil
	}
	s := tasks.NewStore(client(t, endpoints), cfg)
	ctx := context.Background()
	first := submit(t, s, "bob", &v1.SubmitRequest{FunctionName: "f"})
	submit(t, s, "bob", &v1.SubmitRequest{FunctionName: "f"})
	_, _, err := s.Submit(ctx, "bob", &v1.SubmitRequest{FunctionName: "f"}, nil)
	if status.Code(err) != codes.ResourceExhausted || !strings.Contains(err.Error(), "tasks quota of bob exceeded: the limit is 2, 2 in use") {
		t.Fatalf("a third task: %v", err)
	}
	if list, _ := s.List(ctx, "bob", v1.TaskState_TASK_STATE_UNSPECIFIED, "", 0); len(list) != 2 {
		t.Fatalf("the refused submit stored a task: %d tasks", len(list))
	}
	submit(t, s, "alice", &v1.SubmitRequest{FunctionName: "f"}) // not bound by bob's quota
	if _, err := s.Cancel(ctx, "bob", first.Id); err != nil {
		t.Fatal(err)
	}
	submit(t, s, "bob", &v1.SubmitRequest{FunctionName: "f"})
	// Tasks that run to their end free their place too.
	runner(t, client(t, endpoints), "p1", echo)
	list, _ := s.List(ctx, "bob", v1.TaskState_TASK_STATE_UNSPECIFIED, "", 0)
	for _, task := range list {
		wait(t, s, "bob", task.Id)
	}
	if n, err := s.Active(ctx, "bob"); err != nil || n != 0 {
		t.Fatalf("bob's active tasks after they ended: %d, %v", n, err)
	}
}

// Concurrent submits share transactions; submits with one idempotency key
// make one task whichever batch they land in, and a submit whose key is
// taken does not fail the others it is batched with.
func TestConcurrentSubmitsAreBatched(t *testing.T) {
	cli, reqs := countingClient(t, startEtcd(t))
	s := tasks.NewStore(cli, config("p1"))
	ctx := context.Background()
	taken := submit(t, s, "bob", &v1.SubmitRequest{FunctionName: "f", IdempotencyKey: "taken"})
	before := reqs.count("/etcdserverpb.KV/Txn")
	const n = 64
	type result struct {
		key, id  string
		existing bool
		err      error
	}
	results := make([]result, n)
	start := make(chan struct{})
	var wg sync.WaitGroup
	for i := range n {
		key := fmt.Sprintf("own-%d", i)
		switch i % 4 {
		case 0:
			key = "shared"
		case 1:
			key = "taken"
		}
		wg.Go(func() {
			<-start
			task, existing, err := s.Submit(ctx, "bob", &v1.SubmitRequest{FunctionName: "f", IdempotencyKey: key}, nil)
			results[i] = result{key: key, id: task.GetId(), existing: existing, err: err}
		})
	}
	close(start)
	wg.Wait()
	txns := reqs.count("/etcdserverpb.KV/Txn") - before
	ids := map[string]map[string]bool{}
	for _, r := range results {
		if r.err != nil {
			t.Fatalf("submit with key %s: %v", r.key, r.err)
		}
		if ids[r.key] == nil {
			ids[r.key] = map[string]bool{}
		}
		ids[r.key][r.id] = true
		if r.key == "taken" && (!r.existing || r.id != taken.Id) {
			t.Errorf("a submit with a taken key made task %s (existing %v); want %s", r.id, r.existing, taken.Id)
		}
	}
	for key, set := range ids {
		if len(set) != 1 {
			t.Errorf("key %s named %d tasks", key, len(set))
		}
	}
	list, err := s.List(ctx, "bob", v1.TaskState_TASK_STATE_UNSPECIFIED, "f", 1000)
	if err != nil {
		t.Fatal(err)
	}
	if want := 1 + 1 + n/2; len(list) != want { // taken, shared, and one per own key
		t.Errorf("%d tasks recorded, want %d", len(list), want)
	}
	if txns >= n {
		t.Errorf("%d submits took %d transactions: none was batched", n, txns)
	}
	t.Logf("%d concurrent submits in %d transactions", n, txns)
}

// A running task claimed under a live replica's lease that the replica is
// not running (its claim's transaction failed, yet took effect) is queued
// again by that replica's sweep, and runs.
func TestOrphanOfALiveReplicaRunsAgain(t *testing.T) {
	endpoints := startEtcd(t)
	cli := client(t, endpoints)
	s := tasks.NewStore(client(t, endpoints), config("p0"))
	runner(t, cli, "p1", echo)
	ctx := context.Background()
	presence, err := cli.Get(ctx, "/tw/tasks/replica/", clientv3.WithPrefix())
	if err != nil || len(presence.Kvs) != 1 {
		t.Fatalf("p1's presence: %v, %v", presence, err)
	}
	lease := strings.TrimPrefix(string(presence.Kvs[0].Key), "/tw/tasks/replica/")
	// The task as a claim by p1 leaves it: running, under p1's lease.
	id := fmt.Sprintf("%016x%08x", time.Now().UnixNano(), 7)
	orphan := &v1.Task{Id: id, Owner: "bob", FunctionName: "f", State: v1.TaskState_TASK_STATE_RUNNING,
		Retry: &v1.RetryPolicy{MaxAttempts: 1}, CreatedAtMs: time.Now().UnixMilli(),
		Attempts: []*v1.Attempt{{Number: 1, StartedAtMs: time.Now().UnixMilli()}}}
	val, err := proto.Marshal(orphan)
	if err != nil {
		t.Fatal(err)
	}
	if _, err := cli.Txn(ctx).Then(clientv3.OpPut("/tw/tasks/u/bob/"+id, string(val)),
		clientv3.OpPut("/tw/tasks/running/"+id, "bob "+lease), clientv3.OpPut("/tw/tasks/active/bob/"+id, "")).Commit(); err != nil {
		t.Fatal(err)
	}
	got := wait(t, s, "bob", id)
	if got.State != v1.TaskState_TASK_STATE_SUCCEEDED || len(got.Attempts) != 2 || !got.Attempts[0].HandedBack {
		t.Fatalf("state %v, attempts %v", got.State, got.Attempts)
	}
	if n, err := s.Active(ctx, "bob"); err != nil || n != 0 {
		t.Fatalf("bob's active tasks after the orphan ran: %d, %v", n, err)
	}
}

// A Wait for a task running on the waiter's own replica is answered by the
// runner when it writes the outcome; another user's Wait for that task id
// finds no task, as it would anywhere.
func TestWaitOnTheRunningReplica(t *testing.T) {
	s := tasks.NewStore(client(t, startEtcd(t)), config("p1"))
	started, release := make(chan struct{}), make(chan struct{})
	runnerOn(t, s, func(ctx context.Context, user string, req *v1.FunctionCallRequest) (*v1.FunctionCallResponse, error) {
		close(started)
		<-release
		return echo(ctx, user, req)
	})
	task := submit(t, s, "bob", &v1.SubmitRequest{FunctionName: "f"})
	<-started
	ctx, cancel := context.WithTimeout(context.Background(), 30*time.Second)
	defer cancel()
	if _, err := s.Wait(ctx, "eve", task.Id); !errors.Is(err, tasks.ErrNotFound) {
		t.Fatalf("eve waited for bob's running task: %v", err)
	}
	done := make(chan *v1.Task)
	go func() { done <- wait(t, s, "bob", task.Id) }()
	close(release)
	if got := <-done; got.State != v1.TaskState_TASK_STATE_SUCCEEDED || len(got.Attempts) != 1 {
		t.Fatalf("state %v, attempts %v", got.State, got.Attempts)
	}
}

// A replica trusts a recent count of a user's tasks while it is far from
// the limit, and counts again near it: through one replica the limit
// holds exactly.
func TestTasksQuotaCountsAgainNearTheLimit(t *testing.T) {
	cli, reqs := countingClient(t, startEtcd(t))
	cfg := config("p1")
	cfg.Limits = func(context.Context, string) (quota.Limits, error) { return quota.Limits{Tasks: 20}, nil }
	s := tasks.NewStore(cli, cfg)
	before := reqs.count("/etcdserverpb.KV/Range")
	accepted := 0
	for range 25 {
		_, _, err := s.Submit(context.Background(), "bob", &v1.SubmitRequest{FunctionName: "f"}, nil)
		switch {
		case err == nil:
			accepted++
		case status.Code(err) != codes.ResourceExhausted:
			t.Fatal(err)
		}
	}
	if accepted != 20 {
		t.Errorf("%d submits accepted under a limit of 20", accepted)
	}
	// How many counts it took depends on the machine's speed (a count is
	// trusted for a quarter second): logged, not checked.
	t.Logf("%d counts for 25 submits", reqs.count("/etcdserverpb.KV/Range")-before)
}
