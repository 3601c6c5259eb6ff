package egress

import (
	"context"
	"errors"
	"log/slog"
	"net/http"
	"slices"

	"google.golang.org/grpc"
	"google.golang.org/grpc/codes"
	"google.golang.org/grpc/status"

	v1 "github.com/hivemind/taskworker/api/taskworker/v1"
	"github.com/hivemind/taskworker/internal/names"
	"github.com/hivemind/taskworker/internal/serving"
)

// Grantor gives the secret grants of a user's function for one of its
// calls: each secret it may inject with the destinations its value may go
// to (allow, the function's own rules, where the grant names none), and the
// lookup of values, which checks the grant again and records each read.
// The secrets store is one.
type Grantor interface {
	EgressGrants(ctx context.Context, owner, function, caller string, allow *Allowlist) (Grants, Secrets, error)
}

// Server is the EgressService: a user's outbound request carried out as one
// of their functions would have it carried out, to try a policy by hand.
type Server struct {
	v1.UnimplementedEgressServiceServer
	client    *Client
	grantor   Grantor
	checkUser func(ctx context.Context, userID string) (string, error)
	log       *slog.Logger

	// FetchForCall's (ServeCalls).
	calls  CallResolver
	peer   PeerWorker
	scopes callScopes
}

var _ v1.EgressServiceServer = (*Server)(nil)

// NewServer returns the EgressService over client (the pool's one egress
// Client). grantor gives a function's secret grants (nil: requests may
// carry no secrets); checkUser resolves each request's user_id (the pool's,
// as every service); log may be nil.
func NewServer(client *Client, grantor Grantor, checkUser func(ctx context.Context, userID string) (string, error), log *slog.Logger) *Server {
	if log == nil {
		log = slog.New(slog.DiscardHandler)
	}
	return &Server{client: client, grantor: grantor, checkUser: checkUser, log: log.With("service", "egress")}
}

// Register registers s on srv.
func (s *Server) Register(srv *grpc.Server) { v1.RegisterEgressServiceServer(srv, s) }

// Fetch carries out req under its allow_hosts, the pool's address policy
// and, if it names a function, that function's secret grants that name
// hosts.
func (s *Server) Fetch(ctx context.Context, req *v1.FetchRequest) (*v1.FetchResponse, error) {
	user, err := s.checkUser(ctx, req.GetUserId())
	if err != nil {
		return nil, err
	}
	allow, err := ParseAllowlist(req.GetAllowHosts())
	if err != nil {
		return nil, serving.GRPCStatus(err).Err()
	}
	sc := ScopeConfig{Allow: allow}
	if fn := req.GetFunction(); fn != "" {
		if s.grantor == nil {
			return nil, status.Error(codes.FailedPrecondition, "this pool keeps no secrets, so a request cannot carry one: leave function empty")
		}
		// Only grants with hosts apply: a grant without them follows the
		// function's deployed --allow-host rules, which only its own calls
		// carry. Were it the request's allow_hosts, whoever may name the
		// user (the user, an admin) could send the value to a host of
		// their choosing and read it there.
		sc.Grants, sc.Secrets, err = s.grantor.EgressGrants(ctx, user, fn, user, nil)
		switch {
		case errors.Is(err, names.ErrInvalid):
			return nil, status.Errorf(codes.InvalidArgument, "function: %v", err)
		case err != nil:
			return nil, serving.EtcdError(err)
		}
	}
	header := http.Header{}
	for _, h := range req.GetHeaders() {
		header.Add(h.GetName(), h.GetValue())
	}
	scope := s.client.NewScope(sc)
	resp, err := s.client.Fetch(ctx, scope, Request{Method: req.GetMethod(), URL: req.GetUrl(), Header: header, Body: req.GetBody()})
	if err != nil {
		// Fetch's errors name the rule that refused, never a value.
		s.log.Debug("egress fetch refused or failed", "user", user, "function", req.GetFunction(), "requests", scope.Used(), "err", err)
		return nil, serving.GRPCStatus(err).Err()
	}
	s.log.Debug("egress fetch", "user", user, "function", req.GetFunction(), "status", resp.StatusCode, "requests", scope.Used())
	return responseProto(resp, scope), nil
}

// responseProto is resp as the EgressService answers it.
func responseProto(resp *Response, scope *Scope) *v1.FetchResponse {
	out := &v1.FetchResponse{
		StatusCode: int32(resp.StatusCode),
		Status:     resp.Status,
		Body:       resp.Body,
		Url:        resp.URL,
		Requests:   int32(scope.Used()),
	}
	keys := make([]string, 0, len(resp.Header))
	for k := range resp.Header {
		keys = append(keys, k)
	}
	slices.Sort(keys)
	for _, k := range keys {
		for _, v := range resp.Header[k] {
			out.Headers = append(out.Headers, &v1.HTTPHeader{Name: k, Value: v})
		}
	}
	return out
}
