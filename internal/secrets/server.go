package secrets

import (
	"context"
	"errors"
	"log/slog"

	"google.golang.org/grpc"
	"google.golang.org/grpc/codes"
	"google.golang.org/grpc/status"

	v1 "github.com/hivemind/taskworker/api/taskworker/v1"
	"github.com/hivemind/taskworker/internal/egress"
	"github.com/hivemind/taskworker/internal/keyring"
	"github.com/hivemind/taskworker/internal/names"
	"github.com/hivemind/taskworker/internal/serving"
)

// Audit listings: how many events by default, and at most.
const (
	DefaultAuditLimit = 100
	MaxAuditLimit     = 1000
)

// CheckUser resolves a request's user_id to the user it acts for: the
// token's user for an empty one, a status error for one the caller may not
// name. The pool's is the one every service uses.
type CheckUser func(ctx context.Context, userID string) (string, error)

// Server is the SecretService: a user's secrets over a Store. Values come
// in through Put and go out through no method; its logs name secrets and
// users, never values.
type Server struct {
	v1.UnimplementedSecretServiceServer
	store     *Store
	checkUser CheckUser
	log       *slog.Logger

	// ReadForCall's (ServeCalls).
	calls egress.CallResolver
	peer  egress.PeerWorker
}

var _ v1.SecretServiceServer = (*Server)(nil)

// NewServer returns the SecretService over store; checkUser resolves each
// request's user_id; log may be nil.
func NewServer(store *Store, checkUser CheckUser, log *slog.Logger) *Server {
	if log == nil {
		log = slog.New(slog.DiscardHandler)
	}
	return &Server{store: store, checkUser: checkUser, log: log.With("service", "secrets")}
}

// Register registers s on srv.
func (s *Server) Register(srv *grpc.Server) { v1.RegisterSecretServiceServer(srv, s) }

// Put stores a new version of a secret.
func (s *Server) Put(ctx context.Context, req *v1.PutSecretRequest) (*v1.PutSecretResponse, error) {
	user, err := s.checkUser(ctx, req.GetUserId())
	if err != nil {
		return nil, err
	}
	v, err := s.store.Put(ctx, user, req.GetName(), req.GetValue())
	if err != nil {
		return nil, statusOf(err)
	}
	s.log.Info("secret stored", "user", user, "secret", req.GetName(), "version", v)
	return &v1.PutSecretResponse{Name: req.GetName(), Version: v}, nil
}

// List describes the user's secrets.
func (s *Server) List(ctx context.Context, req *v1.ListSecretsRequest) (*v1.ListSecretsResponse, error) {
	user, err := s.checkUser(ctx, req.GetUserId())
	if err != nil {
		return nil, err
	}
	list, err := s.store.List(ctx, user)
	if err != nil {
		return nil, statusOf(err)
	}
	out := &v1.ListSecretsResponse{Secrets: make([]*v1.SecretInfo, len(list))}
	for i, info := range list {
		out.Secrets[i] = infoProto(info)
	}
	s.log.Debug("secrets listed", "user", user, "secrets", len(list))
	return out, nil
}

// Delete removes a secret.
func (s *Server) Delete(ctx context.Context, req *v1.DeleteSecretRequest) (*v1.DeleteSecretResponse, error) {
	user, err := s.checkUser(ctx, req.GetUserId())
	if err != nil {
		return nil, err
	}
	if err := s.store.Delete(ctx, user, req.GetName()); err != nil {
		return nil, statusOf(err)
	}
	s.log.Info("secret deleted", "user", user, "secret", req.GetName())
	return &v1.DeleteSecretResponse{}, nil
}

// Grant lets a function use a secret.
func (s *Server) Grant(ctx context.Context, req *v1.GrantSecretRequest) (*v1.GrantSecretResponse, error) {
	user, err := s.checkUser(ctx, req.GetUserId())
	if err != nil {
		return nil, err
	}
	info, err := s.store.Grant(ctx, user, req.GetName(), req.GetFunction(), req.GetHosts())
	if err != nil {
		return nil, statusOf(err)
	}
	s.log.Info("secret granted", "user", user, "secret", req.GetName(), "function", req.GetFunction(), "hosts", req.GetHosts())
	return &v1.GrantSecretResponse{Secret: infoProto(info)}, nil
}

// Revoke takes a function's grant away.
func (s *Server) Revoke(ctx context.Context, req *v1.RevokeSecretRequest) (*v1.RevokeSecretResponse, error) {
	user, err := s.checkUser(ctx, req.GetUserId())
	if err != nil {
		return nil, err
	}
	info, err := s.store.Revoke(ctx, user, req.GetName(), req.GetFunction())
	if err != nil {
		return nil, statusOf(err)
	}
	s.log.Info("secret grant revoked", "user", user, "secret", req.GetName(), "function", req.GetFunction())
	return &v1.RevokeSecretResponse{Secret: infoProto(info)}, nil
}

// Audit lists the reads of the user's secrets.
func (s *Server) Audit(ctx context.Context, req *v1.AuditRequest) (*v1.AuditResponse, error) {
	user, err := s.checkUser(ctx, req.GetUserId())
	if err != nil {
		return nil, err
	}
	limit := req.GetLimit()
	switch {
	case limit < 0:
		return nil, status.Errorf(codes.InvalidArgument, "limit %d is negative: give 0 for %d events, or up to %d", limit, DefaultAuditLimit, MaxAuditLimit)
	case limit == 0:
		limit = DefaultAuditLimit
	case limit > MaxAuditLimit:
		limit = MaxAuditLimit
	}
	events, err := s.store.Audit(ctx, user, req.GetSecret(), limit)
	if err != nil {
		return nil, statusOf(err)
	}
	out := &v1.AuditResponse{Events: make([]*v1.SecretRead, len(events))}
	for i, e := range events {
		out.Events[i] = &v1.SecretRead{Secret: e.Secret, Version: e.Version, Function: e.Function, Caller: e.Caller, AtMs: e.At.UnixMilli()}
	}
	s.log.Debug("secret reads listed", "user", user, "events", len(events))
	return out, nil
}

// ServeCalls makes s serve ReadForCall: calls resolves each request's
// token, for the worker peer says the request comes from (the pool's
// resolver, shared with the EgressService). Call it before Register.
// Without it, ReadForCall is refused.
func (s *Server) ServeCalls(calls egress.CallResolver, peer egress.PeerWorker) *Server {
	s.calls, s.peer = calls, peer
	return s
}

// ReadForCall reads a secret for the function call a worker runs: the
// function's owner's secret, under the function's grant, recorded in the
// audit log with the call's caller.
func (s *Server) ReadForCall(ctx context.Context, req *v1.ReadForCallRequest) (*v1.ReadForCallResponse, error) {
	call, err := egress.ResolveCall(ctx, s.calls, s.peer, "ReadForCall", req.GetCallToken())
	if err != nil {
		return nil, err
	}
	value, version, err := s.store.Read(ctx, Reader{Owner: call.Owner, Function: call.Function, Caller: call.Caller}, req.GetName(), 0)
	if err != nil {
		s.log.Debug("secret read for a call refused", "owner", call.Owner, "function", call.Function, "secret", req.GetName(), "err", err)
		return nil, statusOf(err)
	}
	s.log.Debug("secret read for a call", "owner", call.Owner, "function", call.Function, "caller", call.Caller, "secret", req.GetName(), "version", version)
	return &v1.ReadForCallResponse{Value: value, Version: version}, nil
}

func infoProto(info Info) *v1.SecretInfo {
	out := &v1.SecretInfo{
		Name:        info.Name,
		Versions:    info.Versions,
		CreatedAtMs: info.CreatedAt.UnixMilli(),
		UpdatedAtMs: info.UpdatedAt.UnixMilli(),
	}
	for _, g := range info.Grants {
		out.Grants = append(out.Grants, &v1.SecretGrant{Function: g.Function, Hosts: g.Hosts})
	}
	return out
}

// statusOf maps the store's errors to the status a caller sees. None of
// them holds a value.
func statusOf(err error) error {
	if _, ok := status.FromError(err); ok {
		return err
	}
	switch {
	case errors.Is(err, ErrNotFound), errors.Is(err, ErrNoGrant):
		return status.Error(codes.NotFound, err.Error())
	case errors.Is(err, ErrNotGranted):
		return status.Error(codes.PermissionDenied, err.Error())
	case errors.Is(err, ErrTooLarge), errors.Is(err, ErrEmpty), errors.Is(err, names.ErrInvalid), errors.Is(err, egress.ErrInvalidRule):
		return status.Error(codes.InvalidArgument, err.Error())
	case errors.Is(err, keyring.ErrUnknownMaster):
		return status.Error(codes.FailedPrecondition, err.Error())
	case errors.Is(err, keyring.ErrCorrupt):
		return status.Errorf(codes.DataLoss, "%v; restore the secret with `taskworker secret put`", err)
	}
	return serving.EtcdError(err)
}

// GRPCStatus is the status the services answer for an error of the Store,
// for other services that act on secrets (a deploy's --secret grants).
func GRPCStatus(err error) error { return statusOf(err) }
