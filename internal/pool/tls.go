package pool

import (
	"context"
	"crypto/tls"
	"crypto/x509"
	"fmt"
	"net"
	"os"
	"path/filepath"
	"slices"
	"time"

	clientv3 "go.etcd.io/etcd/client/v3"
	"google.golang.org/grpc"
	"google.golang.org/grpc/codes"
	"google.golang.org/grpc/credentials"
	"google.golang.org/grpc/credentials/insecure"
	"google.golang.org/grpc/status"

	v1 "github.com/hivemind/taskworker/api/taskworker/v1"
	"github.com/hivemind/taskworker/internal/auth"
	"github.com/hivemind/taskworker/internal/etcdserver"
	"github.com/hivemind/taskworker/internal/pki"
	"github.com/hivemind/taskworker/internal/serving"
)

// etcdTLSDir, in the pool's data directory, holds the embedded etcd's
// certificates and the pool's certificate as its client, issued again at
// every start.
const etcdTLSDir = "etcd-tls"

// loadCA returns the cluster CA: the operator's (--ca-cert, --ca-key), or
// the one in the data directory, made on first start.
func (s *Server) loadCA() (*pki.CA, error) {
	if s.cfg.CACert != "" {
		ca, err := pki.LoadCA(s.cfg.CACert, s.cfg.CAKey)
		if err != nil {
			return nil, fmt.Errorf("cluster CA (--ca-cert, --ca-key): %w", err)
		}
		return ca, nil
	}
	ca, err := pki.LoadOrCreateCA(s.cfg.DataDir)
	if err != nil {
		return nil, fmt.Errorf("cluster CA: %w", err)
	}
	return ca, nil
}

// etcdTLS returns the TLS of the pool's etcd client, and for the embedded
// etcd the TLS it serves with: nil, nil with --insecure.
func (s *Server) etcdTLS() (*tls.Config, *etcdserver.TLS, error) {
	switch {
	case len(s.cfg.EtcdEndpoints) > 0 && s.cfg.EtcdCA != "":
		cfg, err := pki.EtcdClientConfig(s.cfg.EtcdCA, s.cfg.EtcdCert, s.cfg.EtcdKey)
		return cfg, nil, err
	case len(s.cfg.EtcdEndpoints) > 0 || s.cfg.Insecure:
		return nil, nil, nil
	}
	server, files, err := etcdserver.Locked(s.ca, filepath.Join(s.cfg.DataDir, etcdTLSDir))
	if err != nil {
		return nil, nil, err
	}
	cfg, err := pki.EtcdClientConfig(files.CA, files.ClientCert, files.ClientKey)
	return cfg, server, err
}

// checkCA records the CA's certificate in etcd on the network's first
// start, and refuses a CA other than the one recorded: every replica of a
// network must share one CA, or workers enrolled by one would be strangers
// to the others.
func checkCA(ctx context.Context, cli *clientv3.Client, prefix string, ca *pki.CA) error {
	key := prefix + "cluster/ca"
	txn, err := cli.Txn(ctx).
		If(clientv3.Compare(clientv3.CreateRevision(key), "=", 0)).
		Then(clientv3.OpPut(key, string(ca.CertPEM()))).
		Else(clientv3.OpGet(key)).
		Commit()
	if err != nil {
		return err
	}
	if txn.Succeeded {
		return nil
	}
	kvs := txn.Responses[0].GetResponseRange().Kvs
	recorded, err := pki.ParseCertPEM(kvs[0].Value)
	if err != nil {
		return fmt.Errorf("the network's CA certificate in etcd (%s): %w", key, err)
	}
	if !recorded.Equal(ca.Cert()) {
		return fmt.Errorf("this network's CA is %q, and this pool has %q: start every replica with the network's CA (--ca-cert, --ca-key: ca.crt and ca.key from the first pool's data directory)",
			recorded.Subject.CommonName, ca.Name())
	}
	return nil
}

// certHosts are the names the pool's certificate holds: its listen host
// (every local address when it listens on all of them), localhost, the
// machine's name, and the operator's --tls-san.
func certHosts(listen string, extra []string) []string {
	hosts := []string{"localhost", "127.0.0.1", "::1"}
	if name, err := os.Hostname(); err == nil {
		hosts = append(hosts, name)
	}
	host, _, _ := net.SplitHostPort(listen)
	if ip := net.ParseIP(host); host == "" || ip != nil && ip.IsUnspecified() {
		if addrs, err := net.InterfaceAddrs(); err == nil {
			for _, a := range addrs {
				if n, ok := a.(*net.IPNet); ok {
					hosts = append(hosts, n.IP.String())
				}
			}
		}
	} else {
		hosts = append(hosts, host)
	}
	hosts = append(hosts, extra...)
	slices.Sort(hosts)
	return slices.Compact(hosts)
}

// serverCredentials is what the pool serves with: TLS presenting its
// certificate, verifying a worker's when one is given and refusing a
// revoked key in the handshake.
func (s *Server) serverCredentials() credentials.TransportCredentials {
	if s.cfg.Insecure {
		return insecure.NewCredentials()
	}
	cfg := pki.ServerConfig(s.cert, s.ca.Pool())
	cfg.VerifyConnection = func(cs tls.ConnectionState) error {
		if len(cs.PeerCertificates) == 0 {
			return nil
		}
		key, err := pki.KeyHash(cs.PeerCertificates[0].PublicKey)
		if err != nil {
			return err
		}
		if s.ids.isRevoked(key) {
			return fmt.Errorf("the certificate's key was revoked")
		}
		return nil
	}
	return credentials.NewTLS(cfg)
}

// dialWorker connects to worker id at address, over mTLS: the pool
// presents its certificate, and the worker must present one naming id,
// with the key id is bound to.
func (s *Server) dialWorker(id, address string) (*grpc.ClientConn, error) {
	creds := insecure.NewCredentials()
	if !s.cfg.Insecure {
		creds = credentials.NewTLS(pki.ClientConfig(pki.Verify{
			CA: s.ca.Pool(), CAName: "the cluster CA", URI: pki.WorkerURI(s.reg.clusterID, id),
			Check: func(leaf *x509.Certificate) error {
				ctx, cancel := context.WithTimeout(context.Background(), 5*time.Second)
				defer cancel()
				return s.ids.check(ctx, id, leaf)
			},
		}, s.cert))
	}
	return dialWorker(address, creds)
}

// workerIDer is a request that names the worker it is for.
type workerIDer interface{ GetWorkerId() string }

type workerIDKey struct{}

// unaryAuth decides who a call comes from: for the methods the table gives
// to workers, the worker's certificate (workerPeer); for the others, a
// token (tokenStore).
func (s *Server) unaryAuth(ctx context.Context, req any, info *grpc.UnaryServerInfo, handler grpc.UnaryHandler) (any, error) {
	if auth.Lookup(auth.Pool, info.FullMethod) != auth.WorkerCert {
		return s.tokens.unaryInterceptor(ctx, req, info, handler)
	}
	ctx, err := s.workerPeer(ctx, info.FullMethod, req)
	if err != nil {
		return nil, err
	}
	return handler(ctx, req)
}

// streamAuth is unaryAuth for streaming calls.
func (s *Server) streamAuth(srv any, ss grpc.ServerStream, info *grpc.StreamServerInfo, handler grpc.StreamHandler) error {
	if auth.Lookup(auth.Pool, info.FullMethod) != auth.WorkerCert {
		return s.tokens.streamInterceptor(srv, ss, info, handler)
	}
	ctx, err := s.workerPeer(ss.Context(), info.FullMethod, nil)
	if err != nil {
		return err
	}
	return handler(srv, &identityStream{ServerStream: ss, ctx: ctx})
}

// workerPeer admits a worker's call: its certificate, verified by the CA in
// the handshake, must name a worker of this network, be the one its id is
// bound to now (not revoked nor replaced), and, when the request names a
// worker, name that one. With --insecure, the join token stands in.
func (s *Server) workerPeer(ctx context.Context, method string, req any) (context.Context, error) {
	if s.cfg.Insecure {
		return s.insecureWorker(ctx, method)
	}
	id, cert, err := pki.PeerIdentity(ctx)
	if err != nil {
		return nil, status.Errorf(codes.Unauthenticated, "%s is for workers, with their certificate: %v; a worker enrols first (RegistryService.Enroll, with a join token)", method, err)
	}
	if id.Role != pki.RoleWorker || id.Cluster != s.reg.clusterID {
		return nil, status.Errorf(codes.PermissionDenied, "%s is for workers of network %s, and the caller's certificate names %s", method, s.reg.clusterID, cert.URIs[0])
	}
	if r, ok := req.(workerIDer); ok && r.GetWorkerId() != id.WorkerID {
		return nil, status.Errorf(codes.PermissionDenied, "%s: the caller's certificate is worker %s's, and the request is for worker %q; a worker acts only for itself", method, id.WorkerID, r.GetWorkerId())
	}
	if err := s.ids.check(ctx, id.WorkerID, cert); err != nil {
		return nil, err
	}
	return context.WithValue(ctx, workerIDKey{}, id.WorkerID), nil
}

// insecureWorker admits a worker's call by its join token, as a network
// without certificates must.
func (s *Server) insecureWorker(ctx context.Context, method string) (context.Context, error) {
	token, err := auth.FromIncoming(ctx)
	if err != nil {
		return nil, status.Error(codes.Unauthenticated, err.Error())
	}
	rec, ok, err := s.tokens.lookup(ctx, auth.Hash(token), true)
	if err != nil {
		return nil, serving.EtcdError(err)
	}
	if !ok || rec.expired(time.Now()) || (rec.Role != v1.Role_ROLE_WORKER && rec.Role != v1.Role_ROLE_ADMIN) {
		return nil, status.Errorf(codes.PermissionDenied, "%s: this pool runs with --insecure and admits workers by the join token; this token is not one", method)
	}
	return ctx, nil
}
