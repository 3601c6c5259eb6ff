package worker

import (
	"context"

	v1 "github.com/hivemind/taskworker/api/taskworker/v1"
	"github.com/hivemind/taskworker/internal/callhost"
)

// withCallHost returns ctx carrying the Host of req's call, which asks the
// pool over the worker's connection, when the pool gave the call a token;
// without one (a call made on the worker directly), function code reaches
// nothing outside (callhost.ErrNoCall).
func (s *Server) withCallHost(ctx context.Context, req *v1.FunctionCallRequest) context.Context {
	conn := s.poolConn()
	if req.GetCallToken() == "" || conn == nil {
		return ctx
	}
	return callhost.With(ctx, callhost.Pool{Conn: conn, Token: req.GetCallToken()})
}
