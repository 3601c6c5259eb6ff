package dashboard

import (
	"context"
	"fmt"
	"slices"
	"strings"
	"time"

	"google.golang.org/grpc"
	"google.golang.org/grpc/codes"
	"google.golang.org/grpc/status"

	v1 "github.com/hivemind/taskworker/api/taskworker/v1"
)

// Snapshot is what a token may see of the network at one time.
type Snapshot struct {
	Time      time.Time    `json:"time"`
	User      string       `json:"user"`
	Admin     bool         `json:"admin"`
	Workers   []Worker     `json:"workers"`
	Functions []Function   `json:"functions"`
	Storage   *Storage     `json:"storage,omitempty"`
	Tasks     []TaskCount  `json:"tasks"`
	Calls     []CallSample `json:"calls,omitempty"`
}

// Worker is one live worker and its load.
type Worker struct {
	ID            string   `json:"id"`
	Address       string   `json:"address"`
	Zone          string   `json:"zone,omitempty"`
	Inflight      int64    `json:"inflight"`
	CallsTotal    int64    `json:"calls_total"`
	Up            string   `json:"up"`
	LastHeartbeat string   `json:"last_heartbeat"`
	StoresFiles   bool     `json:"stores_files"`
	Functions     []string `json:"functions"`
	// Draining: no new calls or tasks go to the worker.
	Draining bool `json:"draining,omitempty"`
}

// Function is one function the token may call, and where it runs.
type Function struct {
	Name    string   `json:"name"`
	Runtime string   `json:"runtime"`
	Workers []string `json:"workers"`
}

// Storage is the network's file health (admins only).
type Storage struct {
	Files          int64  `json:"files"`
	BytesStored    int64  `json:"bytes_stored"`
	Full           int64  `json:"full"`
	SingleCopy     int64  `json:"single_copy"`
	Reduced        int64  `json:"reduced"`
	Lost           int64  `json:"lost"`
	ShardsDamaged  int64  `json:"shards_damaged"`
	RepairsPending int64  `json:"repairs_pending"`
	RepairsDone    int64  `json:"repairs_done"`
	RepairsFailed  int64  `json:"repairs_failed"`
	ShardsRebuilt  int64  `json:"shards_rebuilt"`
	BytesRebuilt   int64  `json:"bytes_rebuilt"`
	InventoryCheck string `json:"inventory_checked"`
}

// TaskCount is how many of the token's tasks are in one state.
type TaskCount struct {
	State   string `json:"state"`
	Count   int    `json:"count"`
	AtLeast bool   `json:"at_least,omitempty"`
}

// Collect asks the pool on conn for a snapshot, as whoever ctx's credentials
// name (the connection's per-RPC credentials, or an authorization header in
// ctx's outgoing metadata).
func Collect(ctx context.Context, conn grpc.ClientConnInterface) (*Snapshot, error) {
	admin := v1.NewAdminServiceClient(conn)
	who, err := admin.WhoAmI(ctx, &v1.WhoAmIRequest{})
	if err != nil {
		return nil, fmt.Errorf("who am I: %w", err)
	}
	s := &Snapshot{Time: time.Now().UTC(), User: who.User, Admin: who.Role == v1.Role_ROLE_ADMIN}
	ws, err := admin.ListWorkers(ctx, &v1.ListWorkersRequest{})
	if err != nil {
		return nil, fmt.Errorf("list workers: %w", err)
	}
	for _, w := range ws.Workers {
		fns := make([]string, len(w.Functions))
		for i, f := range w.Functions {
			fns[i] = f.Name
		}
		slices.Sort(fns)
		s.Workers = append(s.Workers, Worker{
			ID: w.WorkerId, Address: w.Address, Zone: w.Labels["zone"], Inflight: w.Inflight, CallsTotal: w.CallsTotal,
			Up:            since(s.Time, w.RegisteredAtMs),
			LastHeartbeat: since(s.Time, w.LastHeartbeatMs),
			StoresFiles:   w.StoresFiles, Functions: fns, Draining: w.Draining,
		})
	}
	slices.SortFunc(s.Workers, func(a, b Worker) int { return strings.Compare(a.ID, b.ID) })
	fs, err := admin.ListFunctions(ctx, &v1.ListFunctionsRequest{})
	if err != nil {
		return nil, fmt.Errorf("list functions: %w", err)
	}
	for _, f := range fs.Functions {
		s.Functions = append(s.Functions, Function{Name: f.Name, Runtime: f.Runtime, Workers: f.WorkerIds})
	}
	slices.SortFunc(s.Functions, func(a, b Function) int { return strings.Compare(a.Name, b.Name) })
	if s.Admin {
		st, err := admin.Status(ctx, &v1.StatusRequest{})
		if err != nil {
			return nil, fmt.Errorf("status: %w", err)
		}
		s.Storage = storageOf(st)
	}
	resp, err := v1.NewTaskServiceClient(conn).CountTasks(ctx, &v1.CountTasksRequest{})
	switch {
	case status.Code(err) == codes.Unimplemented: // a pool without tasks
	case err != nil:
		return nil, fmt.Errorf("count tasks: %w", err)
	default:
		counts := map[v1.TaskState]int64{}
		for _, c := range resp.Counts {
			counts[c.State] = c.Count
		}
		for _, state := range []v1.TaskState{v1.TaskState_TASK_STATE_QUEUED, v1.TaskState_TASK_STATE_RUNNING,
			v1.TaskState_TASK_STATE_SUCCEEDED, v1.TaskState_TASK_STATE_FAILED, v1.TaskState_TASK_STATE_CANCELLED} {
			s.Tasks = append(s.Tasks, TaskCount{State: stateName(state), Count: int(counts[state]), AtLeast: resp.Truncated})
		}
	}
	return s, nil
}

func storageOf(st *v1.StatusResponse) *Storage {
	checked := "never"
	if st.InventoryCheckedMs > 0 {
		checked = time.UnixMilli(st.InventoryCheckedMs).UTC().Format(time.DateTime)
	}
	return &Storage{
		Files: st.Files, BytesStored: st.BytesStored, Full: st.FilesFull, SingleCopy: st.FilesSingleCopy,
		Reduced: st.FilesReduced, Lost: st.FilesLost, ShardsDamaged: st.ShardsDamaged,
		RepairsPending: st.RepairsPending, RepairsDone: st.RepairsDone, RepairsFailed: st.RepairsFailed,
		ShardsRebuilt: st.ShardsRebuilt, BytesRebuilt: st.BytesRebuilt, InventoryCheck: checked,
	}
}

func stateName(s v1.TaskState) string {
	switch s {
	case v1.TaskState_TASK_STATE_QUEUED:
		return "queued"
	case v1.TaskState_TASK_STATE_RUNNING:
		return "running"
	case v1.TaskState_TASK_STATE_SUCCEEDED:
		return "succeeded"
	case v1.TaskState_TASK_STATE_FAILED:
		return "failed"
	case v1.TaskState_TASK_STATE_CANCELLED:
		return "cancelled"
	}
	return s.String()
}

func since(now time.Time, ms int64) string {
	if ms <= 0 {
		return ""
	}
	d := now.Sub(time.UnixMilli(ms))
	if d < 0 {
		d = 0
	}
	return d.Round(time.Second).String()
}
