package pool

import (
	"context"
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
	host, _ := os.Hostname()
	cfg.Replica = fmt.Sprintf("%s/%s", host, s.lis.Addr())
	if s.cfg.Tasks != nil {
		s.cfg.Tasks(&cfg)
	}
	store := tasks.NewStore(s.cli, cfg)
	call := func(ctx context.Context, user string, req *v1.FunctionCallRequest) (*v1.FunctionCallResponse, error) {
		ctx = context.WithValue(ctx, identityKey{}, identity{User: user, Role: v1.Role_ROLE_USER})
		return rpc.CallFunction(context.WithValue(ctx, taskKey{}, true), req)
	}
	s.tasks = tasks.NewRunner(store, call)
	tasks.NewServer(store, checkUser, nil, s.cfg.MaxArgsBytes).Register(s.grpc)
	s.goRun(func() {
		if err := s.tasks.Run(ctx, nil); err != nil {
			s.log.Error("the task runner stopped", "err", err)
		}
	})
}
