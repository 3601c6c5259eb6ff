package pool

import (
	"context"
	"errors"
	"fmt"
	"os"

	v1 "github.com/hivemind/taskworker/api/taskworker/v1"
	"github.com/hivemind/taskworker/internal/tasks"
)

// taskKey marks a call made by the task runner: only such a call may carry
// a task id and attempt to the worker.
type taskKey struct{}

func fromTask(ctx context.Context) bool { return ctx.Value(taskKey{}) != nil }

// startTasks serves TaskService and runs this replica's task runner: it
// claims queued tasks and calls their functions through rpc, as their owner
// would, so that a task reaches exactly what its owner's call would.
func (s *Server) startTasks(ctx context.Context, rpc *rpcService) {
	cfg := tasks.DefaultConfig()
	cfg.Prefix, cfg.Logger, cfg.Limits = s.cfg.Prefix, s.log, s.cfg.Quotas
	// A replica's claims outlive it as long as a worker's registration
	// outlives the worker: one --lease-ttl for both.
	cfg.LeaseTTL, cfg.Keep = s.cfg.LeaseTTL, s.cfg.TaskRetention
	host, _ := os.Hostname()
	cfg.Replica = fmt.Sprintf("%s/%s", host, s.lis.Addr())
	if s.cfg.Tasks != nil {
		s.cfg.Tasks(&cfg)
	}
	store := tasks.NewStore(s.cli, cfg)
	s.taskStore = store
	call := func(ctx context.Context, user string, req *v1.FunctionCallRequest) (*v1.FunctionCallResponse, error) {
		ctx, cancel := context.WithCancelCause(ctx)
		defer cancel(nil)
		ctx = context.WithValue(ctx, identityKey{}, identity{User: user, Role: v1.Role_ROLE_USER})
		resp, err := rpc.CallFunction(context.WithValue(ctx, taskKey{}, &taskCall{id: req.TaskId, cancel: cancel}), req)
		if cause := context.Cause(ctx); err != nil && errors.Is(cause, errHandedBack) {
			return nil, tasks.HandedBack(cause.Error())
		}
		return resp, err
	}
	s.tasks = tasks.NewRunner(store, call)
	s.reg.setReplicas(s.tasks)
	tasks.NewServer(store, checkUser, nil, s.cfg.MaxArgsBytes).Register(s.grpc)
	s.goRun(func() {
		if err := s.tasks.Run(ctx, nil); err != nil {
			s.log.Error("the task runner stopped", "err", err)
		}
	})
}
