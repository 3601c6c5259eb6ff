package pool_test

import (
	"slices"
	"strings"
	"testing"
	"time"

	"google.golang.org/grpc/codes"
	"google.golang.org/grpc/status"

	v1 "github.com/hivemind/taskworker/api/taskworker/v1"
	"github.com/hivemind/taskworker/internal/cluster"
	"github.com/hivemind/taskworker/internal/examples"
	"github.com/hivemind/taskworker/internal/worker"
)

// Drained through one pool replica, a worker gets no more calls from
// either; the tasks running on it when the grace runs out are handed back,
// counted in the report, and run to their end elsewhere; undone, it takes
// calls again.
func TestDrainWorkerHandsBackItsTasks(t *testing.T) {
	c := cluster.New(t, cluster.Options{Workers: 3, Pools: 2})
	ctx := ctxTimeout(t, 2*time.Minute)
	cl := c.Client(0)
	admin := v1.NewAdminServiceClient(cl.Conn())
	const n = 9
	var ids []string
	for range n {
		id, err := cl.Submit(ctx, "sleep", []any{10_000})
		if err != nil {
			t.Fatal(err)
		}
		ids = append(ids, id)
	}
	// The worker to drain: the one that runs the most tasks, as its
	// heartbeats say.
	var victim string
	for onVictim := int64(0); onVictim == 0; time.Sleep(100 * time.Millisecond) {
		ws, err := cl.Workers(ctx)
		if err != nil {
			t.Fatal(err)
		}
		for _, w := range ws {
			if w.Inflight > onVictim {
				victim, onVictim = w.WorkerId, w.Inflight
			}
		}
	}
	done := make(chan *v1.DrainResponse, 1)
	go func() {
		resp, err := admin.DrainWorker(ctx, &v1.DrainRequest{WorkerId: victim, GraceMs: 1000})
		if err != nil {
			t.Error(err)
		}
		done <- resp
	}()
	// Both replicas list it as draining, and route no call to it.
	for p := range c.Pools {
		for {
			ws, err := c.Client(p).Workers(ctx)
			if err != nil {
				t.Fatal(err)
			}
			i := slices.IndexFunc(ws, func(w *v1.WorkerInfo) bool { return w.WorkerId == victim })
			if i >= 0 && ws[i].Draining && ws[i].DrainDeadlineMs > 0 {
				break
			}
			if ctx.Err() != nil {
				t.Fatalf("pool %d never listed %s as draining: %v", p, victim, ws)
			}
			time.Sleep(20 * time.Millisecond)
		}
		rpc := v1.NewRPCServiceClient(c.Client(p).Conn())
		for range 30 {
			resp, err := rpc.CallFunction(ctx, &v1.FunctionCallRequest{FunctionName: "add", Args: []byte("[1, 2]")})
			if err != nil {
				t.Fatal(err)
			}
			if resp.WorkerId == victim {
				t.Fatalf("pool %d routed a call to %s, which is draining", p, victim)
			}
		}
	}
	resp := <-done
	if resp == nil {
		return
	}
	if len(resp.TasksHandedBack) == 0 || resp.TasksFinished != 0 || resp.ReplicasMissing != 0 || resp.ReplicasReported != 2 {
		t.Errorf("drain report %v; want the tasks running on %s handed back, none finished, both replicas reporting", resp, victim)
	}
	if len(resp.SoleFunctions) != 0 {
		t.Errorf("sole functions %v; every worker serves the same", resp.SoleFunctions)
	}
	for _, id := range ids {
		task, err := cl.WaitTask(ctx, id)
		if err != nil {
			t.Fatal(err)
		}
		if task.State != v1.TaskState_TASK_STATE_SUCCEEDED {
			t.Fatalf("task %s ended %s: %v", id, task.State, task.Attempts)
		}
		// Its record says it was handed back exactly when the report
		// does.
		last, first := task.Attempts[len(task.Attempts)-1], task.Attempts[0]
		handedBack := first.HandedBack && strings.Contains(first.Error, victim+" was drained")
		if handedBack != slices.Contains(resp.TasksHandedBack, id) {
			t.Errorf("task %s: attempts %v; the drain report's handed back tasks %v", id, task.Attempts, resp.TasksHandedBack)
		}
		if handedBack && (len(task.Attempts) != 2 || last.WorkerId == victim) {
			t.Errorf("task %s, handed back: attempts %v; want a second, on another worker than %s", id, task.Attempts, victim)
		}
		if !handedBack && (len(task.Attempts) != 1 || last.WorkerId == victim) {
			t.Errorf("task %s, not handed back: attempts %v; want one, on another worker than %s", id, task.Attempts, victim)
		}
	}
	// The tasks, counted by state in one call: all nine succeeded.
	counts, err := v1.NewTaskServiceClient(cl.Conn()).CountTasks(ctx, &v1.CountTasksRequest{})
	if err != nil {
		t.Fatal(err)
	}
	if len(counts.Counts) != 1 || counts.Counts[0].State != v1.TaskState_TASK_STATE_SUCCEEDED || counts.Counts[0].Count != n || counts.Truncated {
		t.Errorf("task counts %v; want %d succeeded", counts, n)
	}
	st, err := admin.Status(ctx, &v1.StatusRequest{})
	if err != nil {
		t.Fatal(err)
	}
	if st.WorkersDraining != 1 || st.Workers != 3 {
		t.Errorf("status: %d workers, %d draining; want 3 and 1", st.Workers, st.WorkersDraining)
	}

	undo, err := admin.DrainWorker(ctx, &v1.DrainRequest{WorkerId: victim, Undo: true})
	if err != nil || !undo.WasDraining {
		t.Fatalf("undo: %v, %v; want it was draining", undo, err)
	}
	rpc := v1.NewRPCServiceClient(c.Client(1).Conn())
	for served := false; !served; {
		resp, err := rpc.CallFunction(ctx, &v1.FunctionCallRequest{FunctionName: "add", Args: []byte("[1, 2]")})
		if err != nil {
			t.Fatal(err)
		}
		served = resp.WorkerId == victim
	}
	again, err := admin.DrainWorker(ctx, &v1.DrainRequest{WorkerId: victim, Undo: true})
	if err != nil || again.WasDraining {
		t.Errorf("a second undo: %v, %v; want it was not draining", again, err)
	}
}

// A drain that finds nothing running answers at once, without waiting
// for its grace; one of the only worker serving a function says so.
func TestDrainIdleWorkerAndSoleFunction(t *testing.T) {
	c := cluster.New(t, cluster.Options{Workers: 2, Setup: func(w *worker.Server) error {
		if w.ID() == "worker_001" {
			if err := w.Register("only_here", examples.Hello, true); err != nil {
				return err
			}
		}
		return examples.Register(w.Register)
	}})
	ctx := ctxTimeout(t, 60*time.Second)
	admin := v1.NewAdminServiceClient(c.Client(0).Conn())
	start := time.Now()
	resp, err := admin.DrainWorker(ctx, &v1.DrainRequest{WorkerId: "worker_001", GraceMs: 50_000})
	if err != nil {
		t.Fatal(err)
	}
	if !slices.Equal(resp.SoleFunctions, []string{"only_here"}) {
		t.Errorf("sole functions %v, want [only_here]", resp.SoleFunctions)
	}
	if time.Since(start) >= 50*time.Second {
		t.Errorf("a drain of an idle worker waited for its whole grace")
	}
	if len(resp.TasksHandedBack) != 0 || resp.CallsStillRunning != 0 {
		t.Errorf("drain of an idle worker: %v", resp)
	}
	fs, err := c.Client(0).Functions(ctx)
	if err != nil {
		t.Fatal(err)
	}
	for _, f := range fs {
		if f.Name == "only_here" || slices.Contains(f.WorkerIds, "worker_001") {
			t.Errorf("functions lists %s on %v; a drained worker serves nothing", f.Name, f.WorkerIds)
		}
	}
	_, err = v1.NewRPCServiceClient(c.Client(0).Conn()).CallFunction(ctx, &v1.FunctionCallRequest{FunctionName: "only_here"})
	if status.Code(err) != codes.NotFound {
		t.Errorf("a call of a function only a drained worker serves: %v; want NotFound", err)
	}
}

// Bad drain requests get the status that says what is wrong: an unknown
// worker, a malformed id, a bad grace, a caller who is not an admin, and a
// worker draining another.
func TestDrainRefuses(t *testing.T) {
	c := cluster.New(t, cluster.Options{Workers: 2})
	ctx := ctxTimeout(t, 30*time.Second)
	user, err := c.Client(0).CreateToken(ctx, "alice", "")
	if err != nil {
		t.Fatal(err)
	}
	admin := v1.NewAdminServiceClient(c.Client(0).Conn())
	asUser := v1.NewAdminServiceClient(c.ClientWithToken(0, user).Conn())
	for _, tc := range []struct {
		name   string
		client v1.AdminServiceClient
		req    *v1.DrainRequest
		want   codes.Code
	}{
		{"unknown worker", admin, &v1.DrainRequest{WorkerId: "worker_999"}, codes.NotFound},
		{"undo of an unknown worker", admin, &v1.DrainRequest{WorkerId: "worker_999", Undo: true}, codes.NotFound},
		{"malformed id", admin, &v1.DrainRequest{WorkerId: "../etc"}, codes.InvalidArgument},
		{"negative grace", admin, &v1.DrainRequest{WorkerId: "worker_001", GraceMs: -1}, codes.InvalidArgument},
		{"grace too long", admin, &v1.DrainRequest{WorkerId: "worker_001", GraceMs: (2 * time.Hour).Milliseconds()}, codes.InvalidArgument},
		{"not an admin", asUser, &v1.DrainRequest{WorkerId: "worker_001"}, codes.PermissionDenied},
	} {
		t.Run(tc.name, func(t *testing.T) {
			_, err := tc.client.DrainWorker(ctx, tc.req)
			if status.Code(err) != tc.want {
				t.Errorf("%v; want %s", err, tc.want)
			}
		})
	}
	// A user counts only their own tasks.
	_, err = v1.NewTaskServiceClient(c.ClientWithToken(0, user).Conn()).CountTasks(ctx, &v1.CountTasksRequest{UserId: "admin"})
	if status.Code(err) != codes.PermissionDenied {
		t.Errorf("alice counting another user's tasks: %v; want PermissionDenied", err)
	}
	// A worker's certificate drains its own worker only.
	conn, err := c.EnrollWorker(0, "worker_009")
	if err != nil {
		t.Fatal(err)
	}
	_, err = v1.NewRegistryServiceClient(conn).Drain(ctx, &v1.DrainRequest{WorkerId: "worker_001"})
	if status.Code(err) != codes.PermissionDenied {
		t.Errorf("a worker draining another: %v; want PermissionDenied", err)
	}
	ws, err := c.Client(0).Workers(ctx)
	if err != nil {
		t.Fatal(err)
	}
	for _, w := range ws {
		if w.Draining {
			t.Errorf("worker %s is draining after refused requests", w.WorkerId)
		}
	}
}
