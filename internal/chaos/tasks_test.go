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
// earlier attempt was on the killed worker or the killed pool replica.
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
	var mu sync.Mutex
	var runs []run
	srv := httptest.NewServer(http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		var x run
		if json.NewDecoder(r.Body).Decode(&x) == nil {
			mu.Lock()
			runs = append(runs, x)
			mu.Unlock()
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

	waitFor := func(what string, cond func() bool) {
		deadline := time.Now().Add(2 * time.Minute)
		for !cond() {
			if time.Now().After(deadline) {
				t.Fatalf("waiting for %s: %d reported", what, reported())
			}
			time.Sleep(20 * time.Millisecond)
		}
	}
	waitFor("100 runs", func() bool { return reported() >= 100 })
	workers[1].Kill()
	killedWorker := time.Now()
	t.Logf("killed %s after %d runs", workers[1].Name, reported())
	waitFor("250 runs", func() bool { return reported() >= 250 })
	c.pools[0].Kill()
	t.Logf("killed pool0 after %d runs", reported())
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
	for _, task := range retried {
		for _, a := range task.Attempts[:len(task.Attempts)-1] {
			if !a.HandedBack && !strings.Contains(a.Error, workers[1].Name) {
				t.Errorf("task %s was retried after an attempt that was neither on %s nor on the killed pool: %v", task.Id, workers[1].Name, a)
			}
		}
		last := task.Attempts[len(task.Attempts)-1]
		if took := time.UnixMilli(last.StartedAtMs).Sub(killedWorker); took > 10*lease {
			t.Errorf("task %s started again %s after the kill; the lease is %s", task.Id, took, lease)
		}
	}
	t.Logf("%d tasks, %d retried, %d runs reported", n, len(retried), reported())
}
