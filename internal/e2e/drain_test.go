package e2e

import (
	"context"
	"fmt"
	"io/fs"
	"math/rand/v2"
	"os"
	"path/filepath"
	"slices"
	"strings"
	"sync"
	"syscall"
	"testing"
	"time"

	"google.golang.org/protobuf/encoding/protojson"

	v1 "github.com/hivemind/taskworker/api/taskworker/v1"
)

// TestDrainUnderLoad drains worker_001 with `taskworker drain` in the middle
// of a steady load of idempotent calls (sleep), non-idempotent ones (a
// deployed Starlark function) and tasks that sleep 0-200 ms, then stops
// worker_002 with SIGTERM and starts it again. Long tasks running on each
// when its grace runs out are handed back. No call and no task fails; no
// task runs on worker_001 after its grace; the handed-back tasks ran
// elsewhere, and the drain's report names exactly them.
func TestDrainUnderLoad(t *testing.T) {
	const grace = 1500 * time.Millisecond
	n := &network{t: t, dir: t.TempDir(), poolAddr: freeAddr(t)}
	n.startPool()
	for i := range 3 {
		n.workers = append(n.workers, n.startWorker(fmt.Sprintf("worker_%03d", i+1), "--drain-grace", grace.String()))
	}
	n.waitWorkers(3, 30*time.Second)
	script := filepath.Join(t.TempDir(), "double.star")
	if err := os.WriteFile(script, []byte("def double(x):\n    return x * 2\n"), 0o644); err != nil {
		t.Fatal(err)
	}
	if out, err := n.cli("deploy", "double", script); err != nil { // not --idempotent
		t.Fatalf("deploy: %s %v", out, err)
	}
	c := n.client()
	rpc := v1.NewRPCServiceClient(c.Conn())
	ctx, cancel := context.WithTimeout(context.Background(), 3*time.Minute)
	defer cancel()
	for { // the workers start their Starlark children
		resp, err := rpc.CallFunction(ctx, &v1.FunctionCallRequest{FunctionName: "double", Args: []byte("[21]")})
		if err == nil && string(resp.Result) == "42" {
			break
		}
		if ctx.Err() != nil {
			t.Fatalf("double never answered: %v", err)
		}
		time.Sleep(200 * time.Millisecond)
	}

	type served struct {
		worker     string
		start, end time.Time
	}
	var (
		mu       sync.Mutex
		failures []string
		calls    []served
		taskIDs  []string
	)
	fail := func(format string, args ...any) {
		mu.Lock()
		failures = append(failures, fmt.Sprintf(format, args...))
		mu.Unlock()
	}
	loadCtx, stopLoad := context.WithCancel(ctx)
	var load sync.WaitGroup
	for i := range 6 {
		load.Go(func() {
			for k := 0; loadCtx.Err() == nil; k++ {
				req := &v1.FunctionCallRequest{FunctionName: "sleep", Args: fmt.Appendf(nil, "[%d]", rand.IntN(201))}
				want := string(req.Args[1 : len(req.Args)-1])
				if i%2 == 1 {
					req = &v1.FunctionCallRequest{FunctionName: "double", Args: fmt.Appendf(nil, "[%d]", k)}
					want = fmt.Sprint(2 * k)
				}
				start := time.Now()
				resp, err := rpc.CallFunction(ctx, req)
				if err != nil {
					fail("call %s%s: %v", req.FunctionName, req.Args, err)
					continue
				}
				if string(resp.Result) != want {
					fail("call %s%s = %s, want %s", req.FunctionName, req.Args, resp.Result, want)
				}
				mu.Lock()
				calls = append(calls, served{resp.WorkerId, start, time.Now()})
				mu.Unlock()
			}
		})
	}
	submit := func(ms int) {
		id, err := c.Submit(ctx, "sleep", []any{ms})
		if err != nil {
			fail("submit: %v", err)
			return
		}
		mu.Lock()
		taskIDs = append(taskIDs, id)
		mu.Unlock()
	}
	for range 2 {
		load.Go(func() {
			for loadCtx.Err() == nil {
				submit(rand.IntN(201))
				time.Sleep(20 * time.Millisecond)
			}
		})
	}
	// Long tasks, spread over the workers by the router, so that some
	// still run on the drained worker when its grace runs out.
	long := func() {
		for range 12 {
			submit(6000)
		}
	}
	time.Sleep(time.Second)
	long()
	time.Sleep(500 * time.Millisecond)
	out, err := n.cli("drain", "worker_001", "--grace", grace.String(), "--json")
	if err != nil {
		t.Fatalf("drain: %s %v", out, err)
	}
	drained := time.Now()
	report := &v1.DrainResponse{}
	if err := protojson.Unmarshal([]byte(out), report); err != nil {
		t.Fatalf("drain's output %q: %v", out, err)
	}
	if len(report.TasksHandedBack) == 0 || report.ReplicasMissing != 0 || len(report.SoleFunctions) != 0 {
		t.Errorf("drain report %v; want long tasks handed back, every replica reporting, no function left without a worker", report)
	}
	for _, cmd := range [][]string{{"workers"}, {"status"}} {
		out, err := n.cli(cmd...)
		if i := strings.Index(out, "worker_001"); err != nil || i < 0 || !strings.Contains(strings.SplitN(out[i:], "\n", 2)[0], "draining") {
			t.Errorf("taskworker %s does not show worker_001 draining: %s %v", cmd[0], out, err)
		}
	}

	// SIGTERM worker_002 while long tasks run on it, and start it again.
	time.Sleep(500 * time.Millisecond)
	long()
	time.Sleep(500 * time.Millisecond)
	w2 := n.workers[1]
	if err := w2.Signal(syscall.SIGTERM); err != nil {
		t.Fatal(err)
	}
	select {
	case <-w2.Done():
	case <-time.After(time.Minute):
		t.Fatal("worker_002 did not stop on SIGTERM")
	}
	if code := w2.ExitCode(); code != 0 {
		t.Errorf("worker_002 exited %d on SIGTERM", code)
	}
	if !strings.Contains(w2.Output(), "drained: no new calls or tasks come") {
		t.Errorf("worker_002 did not log its drain")
	}
	restarted := time.Now() // a task handed back by worker_002 may run on it again from here
	if err := w2.Start(); err != nil {
		t.Fatal(err)
	}
	for served := false; !served; {
		mu.Lock()
		for _, s := range calls[max(len(calls)-50, 0):] {
			served = served || s.worker == "worker_002" && s.start.After(drained)
		}
		mu.Unlock()
		if ctx.Err() != nil {
			t.Fatal("the restarted worker_002 never served a call")
		}
		time.Sleep(100 * time.Millisecond)
	}
	time.Sleep(time.Second)
	stopLoad()
	load.Wait()

	for _, f := range failures {
		t.Error(f)
	}
	for _, s := range calls {
		if s.worker == "worker_001" && s.start.After(drained) {
			t.Errorf("a call started %s after the drain ended ran on worker_001", s.start.Sub(drained))
		}
	}
	handedBack := map[string][]string{} // by worker, from the tasks' records
	for _, id := range taskIDs {
		task, err := c.WaitTask(ctx, id)
		if err != nil {
			t.Fatal(err)
		}
		if task.State != v1.TaskState_TASK_STATE_SUCCEEDED {
			t.Errorf("task %s ended %s: %v", id, task.State, task.Attempts)
			continue
		}
		for i, a := range task.Attempts {
			if a.WorkerId == "worker_001" && a.StartedAtMs > report.DeadlineMs {
				t.Errorf("task %s: attempt %d ran on worker_001 after the drain's grace ended", id, a.Number)
			}
			if !a.HandedBack {
				continue
			}
			for _, w := range []string{"worker_001", "worker_002"} {
				if strings.Contains(a.Error, w+" was drained") {
					handedBack[w] = append(handedBack[w], id)
					if i+1 < len(task.Attempts) {
						next := task.Attempts[i+1]
						// An attempt's start is when its replica claimed the task;
						// its worker is chosen later, so on the restarted worker_002
						// an attempt claimed before the restart is fine: it ends
						// after it.
						if next.WorkerId == w && (w == "worker_001" || next.EndedAtMs < restarted.UnixMilli()) {
							t.Errorf("task %s, handed back by %s, ran again on it before it restarted: %v", id, w, task.Attempts)
						}
					}
				}
			}
		}
		if n := len(task.Attempts); task.Attempts[n-1].HandedBack {
			t.Errorf("task %s succeeded with its last attempt handed back: %v", id, task.Attempts)
		}
	}
	slices.Sort(handedBack["worker_001"])
	if !slices.Equal(handedBack["worker_001"], report.TasksHandedBack) {
		t.Errorf("the drain reported %v handed back; the tasks' records say %v", report.TasksHandedBack, handedBack["worker_001"])
	}
	if len(handedBack["worker_002"]) == 0 {
		t.Errorf("no task was handed back by worker_002's SIGTERM drain")
	}
	t.Logf("%d calls, %d tasks; handed back by worker_001: %d, by worker_002: %d; drain report: %v",
		len(calls), len(taskIDs), len(handedBack["worker_001"]), len(handedBack["worker_002"]), report)
}

// TestDrainedWorkerGetsNoNewShards drains one worker of seven and pushes
// files: none of their shards lands in the drained worker's data directory
// (six others give them 4+2 as before), every file reads back, and after
// the drain is undone the worker takes shards again.
func TestDrainedWorkerGetsNoNewShards(t *testing.T) {
	n := startNetwork(t, 7)
	shards := func(id string) int {
		count := 0
		filepath.WalkDir(filepath.Join(n.dir, "workers", id, "shards", "shards"), func(_ string, d fs.DirEntry, err error) error {
			if err == nil && d.Type().IsRegular() {
				count++
			}
			return nil
		})
		return count
	}
	push := func(i int) (string, []byte) {
		data := make([]byte, 1<<20)
		rand.NewChaCha8([32]byte{byte(i)}).Read(data)
		file := filepath.Join(t.TempDir(), fmt.Sprintf("f%d", i))
		if err := os.WriteFile(file, data, 0o600); err != nil {
			t.Fatal(err)
		}
		out, err := n.cli("push", file)
		if err != nil {
			t.Fatalf("push: %s %v", out, err)
		}
		return strings.Fields(out)[0], data
	}
	if out, err := n.cli("drain", "worker_001", "--grace", "1s"); err != nil {
		t.Fatalf("drain: %s %v", out, err)
	}
	before := shards("worker_001")
	files := map[string][]byte{}
	for i := range 12 { // 12 blocks of 6 shards on 7 workers: each worker would get some
		id, data := push(i)
		files[id] = data
	}
	if got := shards("worker_001"); got != before {
		t.Errorf("the drained worker holds %d shard files after the pushes, %d before", got, before)
	}
	for id, data := range files {
		out, err := n.cli("get", id)
		if err != nil || out != string(data) {
			t.Fatalf("get %s: %d bytes, %v", id, len(out), err)
		}
	}
	if out, err := n.cli("drain", "--undo", "worker_001"); err != nil {
		t.Fatalf("drain --undo: %s %v", out, err)
	}
	for i := range 12 {
		push(100 + i)
	}
	if got := shards("worker_001"); got == before {
		t.Errorf("after the drain was undone, 12 more files put no shard on worker_001 (%d shard files)", got)
	}
}
