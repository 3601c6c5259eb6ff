package chaos

import (
	"context"
	"encoding/json"
	"fmt"
	"net/http"
	"net/http/httptest"
	"os/exec"
	"path/filepath"
	"strings"
	"sync"
	"sync/atomic"
	"testing"
	"time"

	"golang.org/x/sync/errgroup"

	v1 "github.com/hivemind/taskworker/api/taskworker/v1"
	"github.com/hivemind/taskworker/internal/pool"
	"github.com/hivemind/taskworker/internal/proctest"
)

// 500 tasks on workers built on the library, through two pool replicas:
// a worker is killed (SIGKILL) while they run, then a pool replica. Every
// task ends succeeded; none is lost; a task ran more than once only if an
// earlier attempt was on the killed worker or the killed pool replica, and
// it finished within twice the lease after the kill that lost its attempt:
// the worker's registration lease for the worker, the runner's lease on
// its tasks for the pool replica.
func TestTasksSurviveAWorkerAndAPoolKilled(t *testing.T) {
	dir := t.TempDir()
	binary, err := proctest.Build(dir)
	if err != nil {
		t.Fatal(err)
	}
	recorder := filepath.Join(dir, "recorder")
	if out, err := exec.Command("go", "build", "-o", recorder, "./testdata/recorder").CombinedOutput(); err != nil {
		t.Fatalf("building the recorder worker: %v\n%s", err, out)
	}
	ctx := context.Background()
	lease := 2 * time.Second
	c, err := startCluster(ctx, Config{Executable: binary, Dir: dir, Workers: 0, LeaseTTL: lease, Log: testWriter{t}})
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(c.stop)
	workers := make([]*proctest.Process, 3)
	for i := range workers {
		id := fmt.Sprintf("rec_%d", i+1)
		workers[i] = &proctest.Process{Name: id, Exe: recorder, Log: filepath.Join(dir, id+".log"),
			Args: []string{id, c.balancer.addr(), filepath.Join(dir, "pool0", pool.JoinTokenFile), c.ca, filepath.Join(dir, id)}}
		if err := workers[i].Start(); err != nil {
			t.Fatal(err)
		}
		c.workers = append(c.workers, workers[i])
	}
	if err := c.waitWorkers(ctx, time.Minute); err != nil {
		t.Fatal(err)
	}

	// The test server: what each attempt reported.
	type run struct {
		Task, Worker string
		Attempt      int
	}
	// The kills happen as the 100th and the 250th runs are reported, so
	// that they fall mid-way however fast the tasks run.
	var mu sync.Mutex
	var runs []run
	var killedWorker, killedPool time.Time
	srv := httptest.NewServer(http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		var x run
		if json.NewDecoder(r.Body).Decode(&x) == nil {
			mu.Lock()
			defer mu.Unlock()
			runs = append(runs, x)
			switch len(runs) {
			case 100:
				workers[1].Kill()
				killedWorker = time.Now()
				t.Logf("killed %s after %d runs", workers[1].Name, len(runs))
			case 250:
				c.pools[0].Kill()
				killedPool = time.Now()
				t.Logf("killed pool0 after %d runs", len(runs))
			}
		}
	}))
	t.Cleanup(srv.Close)
	reported := func() int { mu.Lock(); defer mu.Unlock(); return len(runs) }

	cl, err := c.dial(c.token)
	if err != nil {
		t.Fatal(err)
	}
	defer cl.Close()
	const n = 500
	ids := make([]string, n)
	var submitted atomic.Int32
	g, gctx := errgroup.WithContext(ctx)
	g.SetLimit(8)
	for i := range n {
		g.Go(func() error {
			for try := 0; ; try++ { // the balancer may hand a submit to the killed pool
				sctx, cancel := context.WithTimeout(gctx, 10*time.Second)
				id, err := cl.Submit(sctx, "record", []any{srv.URL})
				cancel()
				if err == nil {
					ids[i] = id
					submitted.Add(1)
					return nil
				}
				if try == 5 {
					return fmt.Errorf("submit %d: %w", i, err)
				}
				time.Sleep(200 * time.Millisecond)
			}
		})
	}

	if err := g.Wait(); err != nil {
		t.Fatal(err)
	}

	var retried []*v1.Task
	for _, id := range ids {
		var task *v1.Task
		for try := 0; ; try++ {
			wctx, cancel := context.WithTimeout(ctx, 2*time.Minute)
			task, err = cl.WaitTask(wctx, id)
			cancel()
			if err == nil || try == 5 {
				break
			}
		}
		if err != nil {
			t.Fatalf("task %s: %v", id, err)
		}
		if task.State != v1.TaskState_TASK_STATE_SUCCEEDED {
			t.Errorf("task %s ended %v: %v", id, task.State, task.Attempts)
			continue
		}
		if len(task.Attempts) > 1 {
			retried = append(retried, task)
		}
	}
	mu.Lock()
	killedAt := [2]time.Time{killedWorker, killedPool}
	seen := map[string]bool{}
	for _, r := range runs {
		seen[r.Task] = true
	}
	mu.Unlock()
	for _, id := range ids {
		if !seen[id] {
			t.Errorf("task %s succeeded but never reported a run", id)
		}
	}
	// An earlier attempt of a retried task was lost with the killed worker
	// (its pool reports which worker failed) or handed back by the killed
	// pool replica.
	taskLease := lease // the pools run their runners with --lease-ttl, as the workers' registrations
	var slowest [2]time.Duration
	var migrated [2]int
	for _, task := range retried {
		lostOnPool := false
		for _, a := range task.Attempts[:len(task.Attempts)-1] {
			if !a.HandedBack && !strings.Contains(a.Error, workers[1].Name) {
				t.Errorf("task %s was retried after an attempt that was neither on %s nor on the killed pool: %v", task.Id, workers[1].Name, a)
			}
			lostOnPool = lostOnPool || a.HandedBack
		}
		i, bound := 0, 2*lease
		if lostOnPool {
			i, bound = 1, 2*taskLease
		}
		kill := killedAt[i]
		took := time.UnixMilli(task.EndedAtMs).Sub(kill)
		slowest[i], migrated[i] = max(slowest[i], took), migrated[i]+1
		if took > bound {
			t.Errorf("task %s finished %s after the kill that lost its attempt; the bound is %s (twice the lease): %v", task.Id, took, bound, task.Attempts)
		}
	}
	t.Logf("%d tasks, %d runs reported; %d migrated from the killed worker, the slowest finished %s after the kill; %d from the killed pool, the slowest %s after",
		n, reported(), migrated[0], slowest[0], migrated[1], slowest[1])
	if migrated[0] == 0 || migrated[1] == 0 {
		t.Errorf("the kills fell where no task ran: %d migrated from the worker, %d from the pool", migrated[0], migrated[1])
	}
}

// Three pool replicas over one etcd, one schedule every second for 20 s:
// exactly one task per tick, every tick, though all three replicas follow
// the schedule and only the elected one fires.
func TestScheduleFiresOncePerTickAcrossThreePools(t *testing.T) {
	dir := t.TempDir()
	binary, err := proctest.Build(dir)
	if err != nil {
		t.Fatal(err)
	}
	ctx := context.Background()
	c, err := startCluster(ctx, Config{Executable: binary, Dir: dir, Workers: 1, Pools: 3, LeaseTTL: 2 * time.Second, Log: testWriter{t}})
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(c.stop)
	cl, err := c.dial(c.token)
	if err != nil {
		t.Fatal(err)
	}
	defer cl.Close()
	ts := v1.NewTaskServiceClient(cl.Conn())
	put, err := ts.PutSchedule(ctx, &v1.PutScheduleRequest{Schedule: &v1.Schedule{Name: "tick", FunctionName: "add", Args: []byte("[1, 2]"), EveryMs: 1000}})
	if err != nil {
		t.Fatal(err)
	}
	created := put.Schedule.CreatedAtMs
	time.Sleep(20 * time.Second)
	if _, err := ts.DeleteSchedule(ctx, &v1.DeleteScheduleRequest{Name: "tick"}); err != nil {
		t.Fatal(err)
	}
	stopped := time.Now().UnixMilli()
	list, err := ts.ListTasks(ctx, &v1.ListTasksRequest{FunctionName: "add", Limit: 1000})
	if err != nil {
		t.Fatal(err)
	}
	ticks := map[int64]int{}
	for _, task := range list.Tasks {
		var tick int64
		if _, err := fmt.Sscanf(task.IdempotencyKey, "schedule/tick/%d", &tick); err != nil {
			t.Errorf("task %s has idempotency key %q, not a tick's", task.Id, task.IdempotencyKey)
			continue
		}
		ticks[tick]++
	}
	// Every tick due before the schedule was deleted, but the last (it may
	// have been due as the deletion went), ran exactly once.
	due := 0
	for tick := created + 1000; tick < stopped-1000; tick += 1000 {
		due++
		if ticks[tick] != 1 {
			t.Errorf("tick %s ran %d times", time.UnixMilli(tick).Format(time.StampMilli), ticks[tick])
		}
	}
	for tick, n := range ticks {
		if n > 1 || (tick-created)%1000 != 0 {
			t.Errorf("tick %d (%d ms after the schedule's creation) ran %d times", tick, tick-created, n)
		}
	}
	if due < 18 {
		t.Fatalf("only %d ticks were due in 20 s", due)
	}
	t.Logf("%d ticks due, %d tasks", due, len(list.Tasks))
}
