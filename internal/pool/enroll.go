package pool

import (
	"context"
	"time"

	"google.golang.org/grpc/codes"
	"google.golang.org/grpc/status"

	v1 "github.com/hivemind/taskworker/api/taskworker/v1"
	"github.com/hivemind/taskworker/internal/names"
	"github.com/hivemind/taskworker/internal/pki"
)

// enroller gives workers their certificates (RegistryService.Enroll).
type enroller struct {
	ca       *pki.CA // nil with --insecure
	ids      *identities
	tokens   *tokenStore
	reg      *registry
	ttl      time.Duration
	insecure bool
}

// enroll signs a worker's CSR. A worker presenting its current certificate
// for the same id and key renews it; any other caller pays with a join
// token (tokenStore.redeemJoin), and the id is bound to the CSR's key
// (identities.bind).
func (e *enroller) enroll(ctx context.Context, req *v1.EnrollRequest) (*v1.EnrollResponse, error) {
	if e.insecure {
		return nil, status.Error(codes.FailedPrecondition, "this pool runs with --insecure and issues no certificates; start the worker with --insecure too, or the pool without it")
	}
	if err := names.WorkerID(req.WorkerId); err != nil {
		return nil, status.Error(codes.InvalidArgument, err.Error())
	}
	if req.ClusterId != "" && req.ClusterId != e.reg.clusterID {
		return nil, status.Errorf(codes.FailedPrecondition, "worker %s: its data directory belongs to network %s, and this pool serves network %s; give the worker a data directory of its own (--data-dir), or point it at its own network's pool",
			req.WorkerId, req.ClusterId, e.reg.clusterID)
	}
	pub, err := pki.CheckCSR(req.Csr)
	if err != nil {
		return nil, status.Errorf(codes.InvalidArgument, "worker %s: %v; send a PKCS#10 request (DER) signed by the worker's ECDSA P-256 key", req.WorkerId, err)
	}
	key, err := pki.KeyHash(pub)
	if err != nil {
		return nil, status.Errorf(codes.InvalidArgument, "worker %s: %v", req.WorkerId, err)
	}
	if !e.renewal(ctx, req.WorkerId, key) {
		if req.JoinToken == "" {
			return nil, status.Errorf(codes.Unauthenticated, "worker %s: a first enrolment needs a join token (--join-token-file, TASKWORKER_JOIN_TOKEN_FILE); renewing needs the worker's current certificate for the same key", req.WorkerId)
		}
		if _, err := e.tokens.redeemJoin(ctx, req.JoinToken); err != nil {
			return nil, err
		}
		if err := e.ids.bind(ctx, req.WorkerId, key, req.EphemeralKey, e.reg.prefix+req.WorkerId); err != nil {
			return nil, err
		}
	}
	der, err := e.ca.Sign(pub, pki.Leaf{URIs: []string{pki.WorkerURI(e.reg.clusterID, req.WorkerId)}, Server: true, Client: true, TTL: e.ttl})
	if err != nil {
		return nil, status.Errorf(codes.Internal, "signing worker %s's certificate: %v", req.WorkerId, err)
	}
	return &v1.EnrollResponse{Certificate: der, CaCertificate: e.ca.CertPEM(), ClusterId: e.reg.clusterID,
		NotAfterMs: time.Now().Add(e.ttl).UnixMilli()}, nil
}

// renewal reports whether the caller presents the current certificate of
// worker id for key: then it needs no join token.
func (e *enroller) renewal(ctx context.Context, id, key string) bool {
	peer, cert, err := pki.PeerIdentity(ctx)
	if err != nil || peer.Role != pki.RoleWorker || peer.Cluster != e.reg.clusterID || peer.WorkerID != id {
		return false
	}
	if peerKey, err := pki.KeyHash(cert.PublicKey); err != nil || peerKey != key {
		return false
	}
	return e.ids.check(ctx, id, cert) == nil
}

func (s *registryService) Enroll(ctx context.Context, req *v1.EnrollRequest) (*v1.EnrollResponse, error) {
	resp, err := s.enroller.enroll(ctx, req)
	if err == nil {
		s.reg.log.Info("worker enrolled", "worker", req.WorkerId, "renewal", req.JoinToken == "")
	}
	return resp, err
}

func (s *adminService) RevokeWorker(ctx context.Context, req *v1.RevokeWorkerRequest) (*v1.RevokeWorkerResponse, error) {
	if err := names.WorkerID(req.WorkerId); err != nil {
		return nil, status.Error(codes.InvalidArgument, err.Error())
	}
	ok, err := s.ids.revoke(ctx, req.WorkerId, s.reg.prefix+req.WorkerId)
	if err != nil {
		return nil, err
	}
	if ok {
		s.reg.log.Warn("worker certificate revoked", "worker", req.WorkerId, "by", identityFrom(ctx).User)
	}
	return &v1.RevokeWorkerResponse{Revoked: ok}, nil
}
