package egress

import (
	"context"
	"fmt"
	"net/http"
	"sync"

	"google.golang.org/grpc/codes"
	"google.golang.org/grpc/status"

	v1 "github.com/hivemind/taskworker/api/taskworker/v1"
	"github.com/hivemind/taskworker/internal/serving"
)

// Call is one function call in flight, as the pool that forwarded it knows
// it: the pool gives the worker a token for it (FunctionCallRequest's
// call_token), and resolves the token back to this when the worker asks, on
// the function's behalf, for a secret (SecretService.ReadForCall) or an
// outbound request (EgressService.FetchForCall).
type Call struct {
	Owner    string // the function's owner: whose secrets, whose grants
	Function string // the function, in its owner's namespace
	Caller   string // the user whose call it is, for the audit log
	// AllowHosts are the function's --allow-host rules (its deployment's
	// capabilities): the only destinations of its outbound requests.
	AllowHosts []string
	// Done is closed when the call has finished. The call's outbound
	// requests share one budget and one redactor until then. Nil: each
	// request is a call of its own (one budget per request).
	Done <-chan struct{}
}

// CallResolver resolves a call's token for the worker that presents it:
// the pool keeps its calls in flight and answers ErrUnknownCall for a token
// it does not know (never issued, or the call has finished) and
// ErrWrongWorker for a call another worker runs.
type CallResolver interface {
	ResolveCall(ctx context.Context, worker, token string) (Call, error)
}

// PeerWorker returns the id of the worker an RPC comes from, as the pool's
// authentication left it in ctx (its certificate, checked). An error is
// the status to answer.
type PeerWorker func(ctx context.Context) (string, error)

// The resolver's refusals.
var (
	ErrUnknownCall = serving.NewError(serving.KindDenied, "unknown call token: the call has finished, or the token was never issued; a function reads secrets and fetches only while its call runs")
	ErrWrongWorker = serving.NewError(serving.KindDenied, "the call token is for a call another worker runs: a worker acts only for its own calls")
)

// callScopes keeps the Scope of each call in flight that has made an
// outbound request, so that the call's requests share one budget, one read
// of each secret and one redactor. A call's scope goes when its Done is
// closed, at the next request of any call.
type callScopes struct {
	mu    sync.Mutex
	calls map[string]*callScope
}

type callScope struct {
	scope *Scope
	done  <-chan struct{}
	ready chan struct{} // closed once scope (or err) is set
	err   error
}

// get returns the scope of the call of token, making it with mk for its
// first request.
func (c *callScopes) get(token string, call Call, mk func() (*Scope, error)) (*Scope, error) {
	if call.Done == nil {
		return mk()
	}
	c.mu.Lock()
	if c.calls == nil {
		c.calls = map[string]*callScope{}
	}
	for t, cs := range c.calls {
		select {
		case <-cs.done:
			delete(c.calls, t)
		default:
		}
	}
	cs, ok := c.calls[token]
	if !ok {
		cs = &callScope{done: call.Done, ready: make(chan struct{})}
		c.calls[token] = cs
	}
	c.mu.Unlock()
	if !ok {
		cs.scope, cs.err = mk()
		if cs.err != nil {
			c.mu.Lock()
			delete(c.calls, token) // the next request tries again
			c.mu.Unlock()
		}
		close(cs.ready)
	}
	<-cs.ready
	return cs.scope, cs.err
}

// ServeCalls makes s serve FetchForCall: calls resolves each request's
// token, for the worker peer says the request comes from. Call it before
// Register. Without it, FetchForCall is refused.
func (s *Server) ServeCalls(calls CallResolver, peer PeerWorker) *Server {
	s.calls, s.peer = calls, peer
	return s
}

// ResolveCall resolves a worker's call token at an RPC boundary: the
// calling worker (peer), then its call (calls). Its errors are statuses
// that say what to do. The secrets server shares it.
func ResolveCall(ctx context.Context, calls CallResolver, peer PeerWorker, method, token string) (Call, error) {
	if calls == nil || peer == nil {
		return Call{}, status.Errorf(codes.FailedPrecondition, "%s: this pool does not serve calls' secrets and outbound requests", method)
	}
	worker, err := peer(ctx)
	if err != nil {
		return Call{}, err
	}
	if token == "" {
		return Call{}, status.Errorf(codes.PermissionDenied, "%s: no call token: a function reads secrets and fetches only during a call the pool forwarded (its call_token)", method)
	}
	call, err := calls.ResolveCall(ctx, worker, token)
	if err != nil {
		if _, ok := status.FromError(err); ok {
			return Call{}, err
		}
		if serving.KindOf(err) == serving.KindUnknown {
			return Call{}, serving.EtcdError(err)
		}
		return Call{}, serving.GRPCStatus(fmt.Errorf("%s: %w", method, err)).Err()
	}
	return call, nil
}

// FetchForCall carries out an outbound request of the call a worker runs:
// under the function's rules and its secret grants, on the call's budget.
func (s *Server) FetchForCall(ctx context.Context, req *v1.FetchForCallRequest) (*v1.FetchResponse, error) {
	call, err := ResolveCall(ctx, s.calls, s.peer, "FetchForCall", req.GetCallToken())
	if err != nil {
		return nil, err
	}
	scope, err := s.scopes.get(req.GetCallToken(), call, func() (*Scope, error) { return s.callScope(ctx, call) })
	if err != nil {
		return nil, err
	}
	r := req.GetRequest()
	header := http.Header{}
	for _, h := range r.GetHeaders() {
		header.Add(h.GetName(), h.GetValue())
	}
	resp, err := s.client.Fetch(ctx, scope, Request{Method: r.GetMethod(), URL: r.GetUrl(), Header: header, Body: r.GetBody()})
	if err != nil {
		s.log.Debug("egress fetch for a call refused or failed", "owner", call.Owner, "function", call.Function, "requests", scope.Used(), "err", err)
		return nil, serving.GRPCStatus(err).Err()
	}
	s.log.Debug("egress fetch for a call", "owner", call.Owner, "function", call.Function, "status", resp.StatusCode, "requests", scope.Used())
	return responseProto(resp, scope), nil
}

// callScope is the Scope of one call: its function's rules, and its
// secret grants (a grant without hosts follows those rules).
func (s *Server) callScope(ctx context.Context, call Call) (*Scope, error) {
	allow, err := ParseAllowlist(call.AllowHosts)
	if err != nil {
		return nil, status.Errorf(codes.FailedPrecondition, "the function's deployed --allow-host rules do not parse (%v): deploy it again", err)
	}
	sc := ScopeConfig{Allow: allow}
	if s.grantor != nil {
		sc.Grants, sc.Secrets, err = s.grantor.EgressGrants(ctx, call.Owner, call.Function, call.Caller, allow)
		if err != nil {
			return nil, serving.EtcdError(err)
		}
	}
	return s.client.NewScope(sc), nil
}
