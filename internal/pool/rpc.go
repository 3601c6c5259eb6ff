package pool

import (
	"cmp"
	"context"
	"encoding/json"
	"slices"
	"sync"
	"time"
	"unicode/utf8"

	"google.golang.org/grpc"
	"google.golang.org/grpc/codes"
	"google.golang.org/grpc/connectivity"
	"google.golang.org/grpc/metadata"
	"google.golang.org/grpc/status"

	v1 "github.com/hivemind/taskworker/api/taskworker/v1"
	"github.com/hivemind/taskworker/internal/auth"
	"github.com/hivemind/taskworker/internal/egress"
	"github.com/hivemind/taskworker/internal/names"
)

// rpcService routes function calls to workers.
type rpcService struct {
	v1.UnimplementedRPCServiceServer
	cfg     Config
	reg     *registry
	deploys *deployments
	running *callCounts
	calls   *calls
	// warm maps a deployed function's owner/name to the worker that served it
	// last, which pick prefers while it is no busier (see pick).
	warm sync.Map
}

// CallFunction serves the pool's own callers (tasks): the worker's answer,
// decoded. Clients' calls come through callFunctionHandler, which forwards
// it as it came.
func (s *rpcService) CallFunction(ctx context.Context, req *v1.FunctionCallRequest) (*v1.FunctionCallResponse, error) {
	a, err := s.call(ctx, req)
	if err != nil {
		return nil, err
	}
	return a.decode()
}

// registerRPCService serves s as RPCService on server, its CallFunction
// answering with the worker's response as the worker encoded it
// (forwardingCodec): the generated service, with that one handler
// replaced.
func registerRPCService(server *grpc.Server, s *rpcService) {
	desc := v1.RPCService_ServiceDesc
	desc.Methods = slices.Clone(desc.Methods)
	for i := range desc.Methods {
		if desc.Methods[i].MethodName == "CallFunction" {
			desc.Methods[i].Handler = callFunctionHandler
		}
	}
	server.RegisterService(&desc, s)
}

// callFunctionHandler is the generated handler of CallFunction, but for
// what it returns to gRPC: an *answer, which forwardingCodec writes.
func callFunctionHandler(srv any, ctx context.Context, dec func(any) error, interceptor grpc.UnaryServerInterceptor) (any, error) {
	req := &v1.FunctionCallRequest{}
	if err := dec(req); err != nil {
		return nil, err
	}
	s := srv.(*rpcService)
	handler := func(ctx context.Context, req any) (any, error) {
		a, err := s.call(ctx, req.(*v1.FunctionCallRequest))
		if err != nil {
			return nil, err // a nil *answer in an interface would not be nil
		}
		return a, nil
	}
	if interceptor == nil {
		return handler(ctx, req)
	}
	return interceptor(ctx, req, &grpc.UnaryServerInfo{Server: srv, FullMethod: v1.RPCService_CallFunction_FullMethodName}, handler)
}

// call routes a call to a worker and returns its answer.
func (s *rpcService) call(ctx context.Context, req *v1.FunctionCallRequest) (*answer, error) {
	user, err := checkUser(ctx, req.UserId)
	if err != nil {
		return nil, err
	}
	if req.FunctionName == "" {
		return nil, status.Error(codes.InvalidArgument, "no function_name given")
	}
	owner, name, err := names.QualifiedFunction(req.FunctionName)
	if err != nil {
		return nil, status.Error(codes.InvalidArgument, err.Error())
	}
	args, err := callArgs(req)
	if err != nil {
		return nil, err
	}
	if len(args) > s.cfg.MaxArgsBytes {
		return nil, status.Errorf(codes.ResourceExhausted, "arguments are %d bytes; the pool accepts at most %d (pass large data as a file and its file_id instead)", len(args), s.cfg.MaxArgsBytes)
	}
	// NAME is the caller's own deployed function, or else a native one;
	// OWNER/NAME is OWNER's deployed function, for whom may call it. One
	// the caller may not call is answered as one that does not exist.
	// A deployed function is never shadowed by a native one of the same
	// name: deploy and registration each refuse a name the other holds,
	// and should both slip through at once, the deployed one takes the
	// calls.
	d := s.deploys.get(cmp.Or(owner, user), name)
	if d != nil && !s.deploys.mayCall(identityFrom(ctx), user, d) {
		d = nil
	}
	notFound := func() error {
		return status.Errorf(codes.NotFound, "no function %q: no live worker serves it (see `taskworker functions`)", req.FunctionName)
	}
	if d == nil && owner != "" {
		return nil, notFound()
	}
	fwd := &v1.FunctionCallRequest{FunctionName: name, Args: args, UserId: user}
	if fromTask(ctx) {
		fwd.TaskId, fwd.TaskAttempt = req.TaskId, req.TaskAttempt
	}
	routes := s.reg.routes(name)
	prefer := ""
	idempotent := func(r route) bool { return r.spec.Idempotent }
	warmKey := ""
	if d != nil {
		routes = s.reg.runtimeRoutes(d.Runtime)
		if len(routes) == 0 {
			return nil, status.Errorf(codes.Unavailable, "%s is a %s function and no live worker runs %s functions", req.FunctionName, runtimeName(d.Runtime), runtimeName(d.Runtime))
		}
		fwd.Deployment = d
		prefer = d.ModuleSha256
		idempotent = func(route) bool { return d.Idempotent }
		warmKey = fullName(d.Owner, d.Name)
	}
	if len(routes) == 0 {
		return nil, notFound()
	}
	q, counted, err := s.running.acquire(ctx, s.cfg.Quotas, user)
	if err != nil {
		return nil, err
	}
	if counted {
		defer s.running.release(user)
	}
	if fwd.Deployment != nil && q.SandboxProcesses > 0 {
		fwd.MaxSandboxProcesses = int32(min(q.SandboxProcesses, 1<<30))
	}

	var warm *worker
	if fwd.Deployment != nil {
		if w, ok := s.warm.Load(warmKey); ok {
			warm = w.(*worker)
		}
	}
	// What the function may do through the pool while it runs: a native
	// function acts for its caller (whose grants name it), a deployed one
	// for its owner, within its deployment's --allow-host rules.
	tokenCall := egress.Call{Owner: user, Function: name, Caller: user}
	if d := fwd.Deployment; d != nil {
		tokenCall.Owner, tokenCall.Function = d.Owner, d.Name
		tokenCall.AllowHosts = d.GetCapabilities().GetAllowHosts()
	}
	var tried []*worker
	var lastErr error
	for attempt := 0; attempt < s.cfg.CallAttempts; attempt++ {
		r, ok := pick(routes, tried, time.Now(), prefer, warm)
		if !ok {
			break
		}
		token, nonce := s.calls.begin(ctx, r.w.id, tokenCall)
		fwd.CallToken = token
		tc := taskCallFrom(ctx)
		if tc != nil {
			r.w.addTask(tc) // for a drain of the worker to hand back
		}
		a, err, reached := s.forward(ctx, r.w, fwd, user)
		if tc != nil {
			r.w.removeTask(tc)
		}
		s.calls.end(nonce)
		if err == nil {
			if fwd.Deployment != nil && r.w != warm {
				s.warm.Store(warmKey, r.w)
			}
			if req.ArgsJson != "" {
				return withResultJSON(a)
			}
			return a, nil
		}
		if reached || ctx.Err() != nil {
			return nil, err
		}
		// The worker's connection failed: avoid it until the registry
		// catches up with its lease.
		r.w.suspectUntil.Store(time.Now().Add(s.cfg.SuspectFor).UnixNano())
		tried = append(tried, r.w)
		lastErr = err
		if !idempotent(r) && !neverSent(err) {
			return nil, status.Errorf(codes.Unavailable, "worker %s failed during the call (%v); %s is not idempotent, so it was not retried and its outcome is unknown",
				r.w.id, status.Convert(err).Message(), req.FunctionName)
		}
	}
	if lastErr == nil {
		return nil, status.Errorf(codes.Unavailable, "no live worker serves %q right now; try again shortly", req.FunctionName)
	}
	return nil, status.Errorf(codes.Unavailable, "%s: every worker tried failed; last: %v", req.FunctionName, status.Convert(lastErr).Message())
}

// callArgs returns a call's arguments from args or args_json (the same JSON
// as text, for tools that show bytes as base64).
func callArgs(req *v1.FunctionCallRequest) ([]byte, error) {
	if req.ArgsJson == "" {
		return req.Args, nil
	}
	if len(req.Args) > 0 {
		return nil, status.Error(codes.InvalidArgument, "both args and args_json are set; set one")
	}
	if !json.Valid([]byte(req.ArgsJson)) {
		return nil, status.Errorf(codes.InvalidArgument, "args_json is not valid JSON: %q", names.Truncate(req.ArgsJson, 64))
	}
	return []byte(req.ArgsJson), nil
}

// withResultJSON adds result_json to an answer, for a call made with
// args_json.
func withResultJSON(a *answer) (*answer, error) {
	resp, err := a.decode()
	if err != nil {
		return nil, status.Errorf(codes.Internal, "%v; the worker's answer could not be read, try again", err)
	}
	if utf8.Valid(resp.Result) {
		resp.ResultJson = string(resp.Result)
	}
	return &answer{msg: resp}, nil
}

// forward makes one call to one worker. reached reports whether the answer
// came from the worker itself (its trailer is present), so err is the
// function's outcome and must not be retried.
func (s *rpcService) forward(ctx context.Context, w *worker, req *v1.FunctionCallRequest, user string) (a *answer, err error, reached bool) {
	if st := w.conn.GetState(); st == connectivity.TransientFailure || st == connectivity.Shutdown {
		return nil, errNotSent, false
	}
	w.outstanding.Add(1)
	defer w.outstanding.Add(-1)
	if len(req.Args) <= muxMaxArgs {
		return w.mux.call(ctx, req)
	}
	ctx = metadata.NewOutgoingContext(ctx, metadata.Pairs(auth.HeaderUser, user))
	var trailer metadata.MD
	resp := &v1.FunctionCallResponse{}
	err = w.conn.Invoke(ctx, v1.RPCService_CallFunction_FullMethodName, req, resp, grpc.Trailer(&trailer))
	if err == nil {
		return &answer{msg: resp}, nil, true
	}
	if status.Code(err) == codes.Canceled && ctx.Err() == nil {
		// The registry retired the connection between pick and send: the
		// worker left, and never saw the call.
		return nil, errNotSent, false
	}
	// Without the worker's trailer, only Unavailable means the connection
	// failed; any other code is the worker's gRPC server answering.
	return nil, err, len(trailer.Get(auth.TrailerWorker)) > 0 || status.Code(err) != codes.Unavailable
}

// errNotSent marks a call skipped before it was sent: safe to retry even for
// functions that are not idempotent.
var errNotSent = status.Error(codes.Unavailable, "connection to the worker is down")

func neverSent(err error) bool { return err == errNotSent }
