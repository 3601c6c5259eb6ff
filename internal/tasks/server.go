package tasks

import (
	"context"
	"encoding/json"
	"maps"
	"slices"

	"google.golang.org/grpc"
	"google.golang.org/grpc/codes"
	"google.golang.org/grpc/status"

	v1 "github.com/hivemind/taskworker/api/taskworker/v1"
	"github.com/hivemind/taskworker/internal/names"
)

// Server serves TaskService over a Store.
type Server struct {
	v1.UnimplementedTaskServiceServer
	store *Store
	// user resolves a request's user_id: empty means the token's user, and
	// only an admin may name another.
	user func(ctx context.Context, userID string) (string, error)
	// callable says whether user may call function now (nil: any): a
	// submit of a function that does not exist fails at once.
	callable func(ctx context.Context, user, function string) error
	maxArgs  int
}

// NewServer returns the service over store. user resolves requests' user
// fields as the pool's other services do; callable, if not nil, refuses a
// submit of a function the user could not call; maxArgs bounds arguments.
func NewServer(store *Store, user func(ctx context.Context, userID string) (string, error),
	callable func(ctx context.Context, user, function string) error, maxArgs int) *Server {
	return &Server{store: store, user: user, callable: callable, maxArgs: maxArgs}
}

// Register serves tasks on g.
func (s *Server) Register(g *grpc.Server) { v1.RegisterTaskServiceServer(g, s) }

func (s *Server) Submit(ctx context.Context, req *v1.SubmitRequest) (*v1.SubmitResponse, error) {
	user, err := s.user(ctx, req.UserId)
	if err != nil {
		return nil, err
	}
	if req.FunctionName == "" {
		return nil, status.Error(codes.InvalidArgument, "no function_name given")
	}
	if err := names.Function(req.FunctionName); err != nil {
		return nil, status.Error(codes.InvalidArgument, err.Error())
	}
	args := req.Args
	if req.ArgsJson != "" {
		if len(args) > 0 {
			return nil, status.Error(codes.InvalidArgument, "both args and args_json are set; set one")
		}
		args = []byte(req.ArgsJson)
	}
	if len(args) > 0 && !json.Valid(args) {
		return nil, status.Errorf(codes.InvalidArgument, "args are not valid JSON: %q", names.Truncate(string(args), 64))
	}
	if s.maxArgs > 0 && len(args) > s.maxArgs {
		return nil, status.Errorf(codes.ResourceExhausted, "arguments are %d bytes; a task takes at most %d (pass large data as a file and its file_id instead)", len(args), s.maxArgs)
	}
	if s.callable != nil {
		if err := s.callable(ctx, user, req.FunctionName); err != nil {
			return nil, err
		}
	}
	t, existing, err := s.store.Submit(ctx, user, req, args)
	if err != nil {
		return nil, statusOf(err)
	}
	return &v1.SubmitResponse{Task: t, Existing: existing}, nil
}

func (s *Server) GetTask(ctx context.Context, req *v1.GetTaskRequest) (*v1.GetTaskResponse, error) {
	user, err := s.user(ctx, req.UserId)
	if err != nil {
		return nil, err
	}
	t, _, err := s.store.Get(ctx, user, req.Id)
	if err != nil {
		return nil, statusOf(err)
	}
	return &v1.GetTaskResponse{Task: t}, nil
}

func (s *Server) ListTasks(ctx context.Context, req *v1.ListTasksRequest) (*v1.ListTasksResponse, error) {
	user, err := s.user(ctx, req.UserId)
	if err != nil {
		return nil, err
	}
	if req.FunctionName != "" {
		if err := names.Function(req.FunctionName); err != nil {
			return nil, status.Error(codes.InvalidArgument, err.Error())
		}
	}
	if req.Limit < 0 {
		return nil, status.Errorf(codes.InvalidArgument, "limit %d is negative", req.Limit)
	}
	ts, err := s.store.List(ctx, user, req.State, req.FunctionName, int(req.Limit))
	if err != nil {
		return nil, statusOf(err)
	}
	return &v1.ListTasksResponse{Tasks: ts}, nil
}

func (s *Server) CountTasks(ctx context.Context, req *v1.CountTasksRequest) (*v1.CountTasksResponse, error) {
	user, err := s.user(ctx, req.UserId)
	if err != nil {
		return nil, err
	}
	counts, truncated, err := s.store.Count(ctx, user)
	if err != nil {
		return nil, statusOf(err)
	}
	resp := &v1.CountTasksResponse{Truncated: truncated}
	for _, st := range slices.Sorted(maps.Keys(counts)) {
		resp.Counts = append(resp.Counts, &v1.TaskStateCount{State: st, Count: counts[st]})
	}
	return resp, nil
}

func (s *Server) WaitTask(ctx context.Context, req *v1.WaitTaskRequest) (*v1.WaitTaskResponse, error) {
	user, err := s.user(ctx, req.UserId)
	if err != nil {
		return nil, err
	}
	t, err := s.store.Wait(ctx, user, req.Id)
	if err != nil {
		return nil, statusOf(err)
	}
	return &v1.WaitTaskResponse{Task: t}, nil
}

func (s *Server) CancelTask(ctx context.Context, req *v1.CancelTaskRequest) (*v1.CancelTaskResponse, error) {
	user, err := s.user(ctx, req.UserId)
	if err != nil {
		return nil, err
	}
	t, err := s.store.Cancel(ctx, user, req.Id)
	if err != nil {
		return nil, statusOf(err)
	}
	return &v1.CancelTaskResponse{Task: t}, nil
}

func (s *Server) PutSchedule(ctx context.Context, req *v1.PutScheduleRequest) (*v1.PutScheduleResponse, error) {
	user, err := s.user(ctx, req.UserId)
	if err != nil {
		return nil, err
	}
	sc := req.GetSchedule()
	if sc == nil {
		return nil, status.Error(codes.InvalidArgument, "no schedule given")
	}
	if len(sc.Args) > 0 && !json.Valid(sc.Args) {
		return nil, status.Errorf(codes.InvalidArgument, "args are not valid JSON: %q", names.Truncate(string(sc.Args), 64))
	}
	if s.maxArgs > 0 && len(sc.Args) > s.maxArgs {
		return nil, status.Errorf(codes.ResourceExhausted, "arguments are %d bytes; a task takes at most %d", len(sc.Args), s.maxArgs)
	}
	if s.callable != nil {
		if err := names.Function(sc.FunctionName); err == nil {
			if err := s.callable(ctx, user, sc.FunctionName); err != nil {
				return nil, err
			}
		}
	}
	out, err := s.store.PutSchedule(ctx, user, sc)
	if err != nil {
		return nil, statusOf(err)
	}
	return &v1.PutScheduleResponse{Schedule: out}, nil
}

func (s *Server) ListSchedules(ctx context.Context, req *v1.ListSchedulesRequest) (*v1.ListSchedulesResponse, error) {
	user, err := s.user(ctx, req.UserId)
	if err != nil {
		return nil, err
	}
	out, err := s.store.ListSchedules(ctx, user)
	if err != nil {
		return nil, statusOf(err)
	}
	return &v1.ListSchedulesResponse{Schedules: out}, nil
}

func (s *Server) DeleteSchedule(ctx context.Context, req *v1.DeleteScheduleRequest) (*v1.DeleteScheduleResponse, error) {
	user, err := s.user(ctx, req.UserId)
	if err != nil {
		return nil, err
	}
	if err := s.store.DeleteSchedule(ctx, user, req.Name); err != nil {
		return nil, statusOf(err)
	}
	return &v1.DeleteScheduleResponse{}, nil
}
