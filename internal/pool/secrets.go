package pool

import (
	"context"
	"fmt"

	"google.golang.org/grpc/codes"
	"google.golang.org/grpc/status"

	"github.com/hivemind/taskworker/internal/egress"
	"github.com/hivemind/taskworker/internal/secrets"
)

// startSecrets serves SecretService, KeyService (rotating the master keys
// and rewrapping the data keys of secrets and of file versions) and
// EgressService.
func (s *Server) startSecrets() error {
	store := s.secrets
	var err error
	if s.egress, err = egress.New(egress.Config{AllowNets: s.cfg.EgressAllowNets}); err != nil {
		return fmt.Errorf("egress: %w", err)
	}
	secrets.NewServer(store, checkUser, s.log).ServeCalls(s.calls, s.peerWorker).Register(s.grpc)
	secrets.NewKeyServer(s.keys, map[string]secrets.Rewrapper{"secrets": store, "files": s.files,
		"key record": keyRecord{cli: s.cli, prefix: s.cfg.Prefix, ring: s.keys}}, s.log).Register(s.grpc)
	egress.NewServer(s.egress, store, checkUser, s.log).ServeCalls(s.calls, s.peerWorker).Register(s.grpc)
	return nil
}

// peerWorker is the worker a call of a worker-only method comes from, as
// its certificate says (workerPeer). A network run with --insecure has no
// worker identities, so it hands functions no secrets or outbound requests.
func (s *Server) peerWorker(ctx context.Context) (string, error) {
	if id, ok := ctx.Value(workerIDKey{}).(string); ok && id != "" {
		return id, nil
	}
	if s.cfg.Insecure {
		return "", status.Error(codes.FailedPrecondition, "this pool runs with --insecure: workers have no certificates, so functions get no secrets and make no outbound requests through it; run the pool with TLS")
	}
	return "", status.Error(codes.Unauthenticated, "a worker's certificate is needed")
}
