package quota

import (
	"context"
	"errors"

	"google.golang.org/grpc"
	"google.golang.org/grpc/codes"
	"google.golang.org/grpc/status"

	v1 "github.com/hivemind/taskworker/api/taskworker/v1"
)

// Server serves QuotaService over a Store. Who may call which method is the
// auth table's business (SetQuota and ListQuotas: admins); the server checks
// whose quota a GetQuota may read.
type Server struct {
	v1.UnimplementedQuotaServiceServer
	store *Store
	// user resolves a request's user field: empty means the token's user,
	// and only an admin may name another.
	user func(ctx context.Context, userID string) (string, error)
}

// NewServer returns the service over store; user resolves requests' user
// fields as the pool's other services do.
func NewServer(store *Store, user func(ctx context.Context, userID string) (string, error)) *Server {
	return &Server{store: store, user: user}
}

// Register serves the quotas on g.
func (s *Server) Register(g *grpc.Server) { v1.RegisterQuotaServiceServer(g, s) }

func (s *Server) SetQuota(ctx context.Context, req *v1.SetQuotaRequest) (*v1.SetQuotaResponse, error) {
	switch {
	case req.Defaults && req.User != "":
		return nil, status.Error(codes.InvalidArgument, "set either a user's quotas (user) or the defaults (defaults), not both")
	case !req.Defaults && req.User == "":
		return nil, status.Error(codes.InvalidArgument, "no user: name the user whose quotas to set, or set the defaults")
	case req.Defaults && req.Reset_:
		return nil, status.Error(codes.InvalidArgument, "reset forgets a user's own quotas; the defaults have none to forget")
	}
	change := req.Quota
	if change == nil {
		change = &v1.Quota{}
	}
	eff, err := s.store.Set(ctx, req.User, change, req.Reset_)
	if err != nil {
		return nil, statusOf(err)
	}
	return &v1.SetQuotaResponse{Effective: eff}, nil
}

func (s *Server) GetQuota(ctx context.Context, req *v1.GetQuotaRequest) (*v1.GetQuotaResponse, error) {
	user, err := s.user(ctx, req.User)
	if err != nil {
		return nil, err
	}
	own, eff, err := s.store.Get(ctx, user)
	if err != nil {
		return nil, statusOf(err)
	}
	return &v1.GetQuotaResponse{User: user, Own: own, Effective: eff}, nil
}

func (s *Server) ListQuotas(ctx context.Context, _ *v1.ListQuotasRequest) (*v1.ListQuotasResponse, error) {
	defaults, users, err := s.store.List(ctx)
	if err != nil {
		return nil, statusOf(err)
	}
	return &v1.ListQuotasResponse{Defaults: Effective(nil, defaults), Users: users}, nil
}

func statusOf(err error) error {
	switch {
	case errors.Is(err, ErrInvalid):
		return status.Error(codes.InvalidArgument, err.Error())
	case errors.Is(err, context.DeadlineExceeded), errors.Is(err, context.Canceled):
		return status.FromContextError(err).Err()
	}
	return status.Errorf(codes.Unavailable, "%v; try again when etcd is reachable", err)
}
