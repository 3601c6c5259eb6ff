package worker

import (
	"context"
	"crypto/ecdsa"
	"crypto/tls"
	"crypto/x509"
	"encoding/pem"
	"errors"
	"fmt"
	"io/fs"
	"os"
	"path/filepath"
	"time"

	"google.golang.org/grpc"
	"google.golang.org/grpc/codes"
	"google.golang.org/grpc/credentials"
	"google.golang.org/grpc/credentials/insecure"
	"google.golang.org/grpc/status"

	v1 "github.com/hivemind/taskworker/api/taskworker/v1"
	"github.com/hivemind/taskworker/internal/atomicfile"
	"github.com/hivemind/taskworker/internal/auth"
	"github.com/hivemind/taskworker/internal/liveness"
	"github.com/hivemind/taskworker/internal/pki"
	"github.com/hivemind/taskworker/internal/pools"
)

// Files of a worker's identity, in <data-dir>/identity (0700): its key
// (0600), made once, and its certificate, renewed by the pool.
const (
	identityDir  = "identity"
	keyFile      = "worker.key"
	certFile     = "worker.crt"
	standaloneID = "standalone"
	// StandaloneTLSDir, in a standalone worker's data directory, holds
	// what a caller needs to call it as its pool: ca.crt, pool.crt and
	// pool.key, made at every start.
	StandaloneTLSDir = "standalone-tls"
)

// identity is the worker's key and certificate, and the CA it trusts.
type identity struct {
	key       *ecdsa.PrivateKey
	ephemeral bool // no data directory: the key lives in memory only
	cert      *pki.Holder
	ca        *x509.CertPool
	caName    string
}

// loadIdentity reads the worker's key (making one on first start) and its
// certificate, when it has a valid one for this id from this CA.
func (s *Server) loadIdentity() error {
	id := &identity{cert: &pki.Holder{}, caName: s.cfg.CAName}
	if id.caName == "" {
		id.caName = "the CA given to the worker"
	}
	s.id = id
	if s.cfg.PoolAddr == "" {
		return s.standaloneIdentity()
	}
	ca, err := pki.ParseCertPEM(s.cfg.CA)
	if err != nil {
		return fmt.Errorf("the CA certificate (%s): %w", id.caName, err)
	}
	id.ca = x509.NewCertPool()
	id.ca.AddCert(ca)
	if s.cfg.DataDir == "" {
		id.ephemeral = true
		id.key, err = pki.NewKey()
		return err
	}
	dir := filepath.Join(s.cfg.DataDir, identityDir)
	if err := pki.OwnerOnlyDir(dir); err != nil {
		return err
	}
	b, err := os.ReadFile(filepath.Join(dir, keyFile))
	switch {
	case errors.Is(err, fs.ErrNotExist):
		if id.key, err = pki.NewKey(); err != nil {
			return err
		}
		pemKey, err := pki.EncodeKey(id.key)
		if err != nil {
			return err
		}
		if err := atomicfile.Write(filepath.Join(dir, keyFile), pemKey, 0o600); err != nil {
			return fmt.Errorf("writing the worker's key: %w", err)
		}
	case err != nil:
		return fmt.Errorf("reading the worker's key: %w", err)
	default:
		if id.key, err = pki.DecodeKey(b); err != nil {
			return fmt.Errorf("the worker's key %s: %w; remove it, revoke the worker (taskworker workers revoke %s) and enrol again", filepath.Join(dir, keyFile), err, s.cfg.ID)
		}
	}
	if b, err := os.ReadFile(filepath.Join(dir, certFile)); err == nil {
		if c, err := s.usableCert(b); err == nil {
			id.cert.Set(c)
		} else {
			s.log.Info("the stored certificate cannot be used; enrolling again", "err", err)
		}
	}
	return nil
}

// usableCert parses a stored certificate and checks it is still good: for
// this worker's key and id, from the CA, not expired.
func (s *Server) usableCert(certPEM []byte) (tls.Certificate, error) {
	block, _ := pem.Decode(certPEM)
	if block == nil {
		return tls.Certificate{}, errors.New("no PEM block")
	}
	c, err := pki.KeyPair(block.Bytes, s.id.key)
	if err != nil {
		return tls.Certificate{}, err
	}
	if _, err := c.Leaf.Verify(x509.VerifyOptions{Roots: s.id.ca, KeyUsages: []x509.ExtKeyUsage{x509.ExtKeyUsageClientAuth}}); err != nil {
		return tls.Certificate{}, err
	}
	who, err := pki.IdentityOf(c.Leaf)
	if err != nil {
		return tls.Certificate{}, err
	}
	if who.Role != pki.RoleWorker || who.WorkerID != s.cfg.ID {
		return tls.Certificate{}, fmt.Errorf("the certificate names %s, not worker %s", c.Leaf.URIs[0], s.cfg.ID)
	}
	if !time.Now().Before(c.Leaf.NotAfter) {
		return tls.Certificate{}, errors.New("expired")
	}
	return c, nil
}

// standaloneIdentity makes a throwaway CA for a worker with no pool: the
// worker's certificate, and a pool certificate for its callers, written to
// <data-dir>/standalone-tls (benchmarks call the worker directly with it).
func (s *Server) standaloneIdentity() error {
	ca, err := pki.NewCA()
	if err != nil {
		return err
	}
	c, err := ca.IssueKeyPair(pki.Leaf{URIs: []string{pki.WorkerURI(standaloneID, s.cfg.ID)}, Hosts: []string{"127.0.0.1", "localhost"},
		Server: true, Client: true, TTL: 30 * 24 * time.Hour})
	if err != nil {
		return err
	}
	s.id.cert.Set(c)
	s.id.ca = ca.Pool()
	if s.cfg.DataDir == "" {
		return nil
	}
	caller, err := ca.IssueKeyPair(pki.Leaf{CommonName: pki.PoolCommonName, URIs: []string{pki.PoolURI(standaloneID)}, Client: true, TTL: 30 * 24 * time.Hour})
	if err != nil {
		return err
	}
	dir := filepath.Join(s.cfg.DataDir, StandaloneTLSDir)
	if err := pki.WriteKeyPair(filepath.Join(dir, "pool.crt"), filepath.Join(dir, "pool.key"), caller); err != nil {
		return err
	}
	return atomicfile.Write(filepath.Join(dir, pki.CACertFile), ca.CertPEM(), 0o644)
}

// cluster is the network the worker's certificate belongs to ("" before
// the first enrolment).
func (s *Server) cluster() string {
	c := s.id.cert.Current()
	if c == nil {
		return ""
	}
	who, err := pki.IdentityOf(c.Leaf)
	if err != nil {
		return ""
	}
	return who.Cluster
}

// isPool admits the caller only if it proved, with a certificate from the
// worker's CA, that it is its network's pool.
func (s *Server) isPool(ctx context.Context) error {
	if s.cfg.Insecure {
		return nil
	}
	who, cert, err := pki.PeerIdentity(ctx)
	if err != nil {
		return err
	}
	cluster := s.cluster()
	if who.Role != pki.RolePool || who.Cluster != cluster {
		return fmt.Errorf("its certificate names %s, and this worker's pool is %s", cert.URIs[0], pki.PoolURI(cluster))
	}
	return nil
}

// serverCredentials: TLS with the worker's certificate, verifying the
// caller's certificate against the CA (isPool then checks it is the
// pool's); plaintext with --insecure.
func (s *Server) serverCredentials() credentials.TransportCredentials {
	if s.cfg.Insecure {
		return insecure.NewCredentials()
	}
	return credentials.NewTLS(pki.ServerConfig(s.id.cert, s.id.ca))
}

// dialPool connects to the pool (to several replicas, spreading its
// requests over them, when PoolAddr lists several; package pools): over
// TLS, verifying each pool's certificate by the CA, the name its address
// gives and its identity, presenting the worker's certificate when withCert
// is set; with --insecure in plaintext, with the join token.
func (s *Server) dialPool(withCert bool) (*grpc.ClientConn, error) {
	addrs, err := pools.Parse(s.cfg.PoolAddr)
	if err != nil {
		return nil, fmt.Errorf("worker %s: %w", s.cfg.ID, err)
	}
	opts := append([]grpc.DialOption{liveness.DialOption()}, pools.DialOptions(addrs)...)
	if s.cfg.Insecure {
		opts = append(opts, grpc.WithTransportCredentials(insecure.NewCredentials()),
			grpc.WithPerRPCCredentials(auth.Bearer{Token: s.cfg.JoinToken}))
	} else {
		var h *pki.Holder
		if withCert {
			h = s.id.cert
		}
		opts = append(opts, grpc.WithTransportCredentials(pools.PerHost(func(host string) credentials.TransportCredentials {
			return credentials.NewTLS(pki.ClientConfig(pki.Verify{
				CA: s.id.ca, CAName: s.id.caName, Host: host,
				Check: func(leaf *x509.Certificate) error {
					who, err := pki.IdentityOf(leaf)
					if err != nil || who.Role != pki.RolePool {
						return fmt.Errorf("the server at %s is not a taskworker pool (its certificate names %v)", host, leaf.URIs)
					}
					if c := s.cluster(); c != "" && who.Cluster != c {
						return fmt.Errorf("the pool at %s serves network %s, and this worker belongs to %s", host, who.Cluster, c)
					}
					return nil
				},
			}, h))
		})))
	}
	conn, err := grpc.NewClient(pools.Target(addrs), opts...)
	if err != nil {
		return nil, fmt.Errorf("worker %s: pool address %q: %w", s.cfg.ID, s.cfg.PoolAddr, err)
	}
	return conn, nil
}

// poolConn returns the worker's connection to the pool.
func (s *Server) poolConn() *grpc.ClientConn { return s.pool.Load() }

// enroll gets a certificate for the worker's key: with the join token on
// a connection of its own that presents none (the worker has none, or one
// the pool no longer takes). The connection to the pool is then made
// again, so that it presents the new certificate.
func (s *Server) enroll(ctx context.Context) error {
	if s.cfg.JoinToken == "" {
		return fmt.Errorf("worker %s has no valid certificate, and a first enrolment needs a join token: pass --join-token-file (TASKWORKER_JOIN_TOKEN_FILE)", s.cfg.ID)
	}
	conn, err := s.dialPool(false)
	if err != nil {
		return err
	}
	defer conn.Close()
	if err := s.requestCert(ctx, conn, s.cfg.JoinToken); err != nil {
		return err
	}
	next, err := s.dialPool(true)
	if err != nil {
		return err
	}
	if old := s.pool.Swap(next); old != nil {
		old.Close()
	}
	return nil
}

// requestCert sends a CSR for the worker's key on conn and keeps the
// certificate it gets: in memory, and in the data directory.
func (s *Server) requestCert(ctx context.Context, conn *grpc.ClientConn, joinToken string) error {
	csr, err := pki.NewCSR(s.id.key)
	if err != nil {
		return err
	}
	ctx, cancel := context.WithTimeout(ctx, 10*time.Second)
	defer cancel()
	// s.network is written only by a first enrolment, before the
	// certificate that lets renewals start.
	resp, err := v1.NewRegistryServiceClient(conn).Enroll(ctx, &v1.EnrollRequest{WorkerId: s.cfg.ID, Csr: csr, JoinToken: joinToken, EphemeralKey: s.id.ephemeral, ClusterId: s.network})
	if status.Code(err) == codes.FailedPrecondition && s.network != "" {
		s.refuse(errors.New(status.Convert(err).Message()))
		return s.refusal
	}
	if err != nil {
		return err
	}
	c, err := pki.KeyPair(resp.Certificate, s.id.key)
	if err != nil {
		return fmt.Errorf("the pool's certificate for worker %s: %w", s.cfg.ID, err)
	}
	if joinToken != "" {
		// A first enrolment claims the data directory for the pool's
		// network, or finds it is another's: then nothing is stored.
		if err := s.claimDataDir(resp.ClusterId); err != nil {
			return err
		}
	}
	if _, err := c.Leaf.Verify(x509.VerifyOptions{Roots: s.id.ca, KeyUsages: []x509.ExtKeyUsage{x509.ExtKeyUsageClientAuth}}); err != nil {
		return fmt.Errorf("the pool's certificate for worker %s is not from the CA the worker trusts: %w", s.cfg.ID, err)
	}
	if !s.id.ephemeral {
		certPEM := pem.EncodeToMemory(&pem.Block{Type: "CERTIFICATE", Bytes: resp.Certificate})
		if err := atomicfile.Write(filepath.Join(s.cfg.DataDir, identityDir, certFile), certPEM, 0o600); err != nil {
			return fmt.Errorf("storing the worker's certificate: %w", err)
		}
	}
	s.id.cert.Set(c)
	s.log.Info("certificate issued", "not_after", c.Leaf.NotAfter.Format(time.RFC3339))
	return nil
}

// needsEnrolment reports whether the worker has no certificate it can
// use: none, or an expired one (renewal failed until then).
func (s *Server) needsEnrolment() bool {
	if s.cfg.Insecure {
		return false
	}
	c := s.id.cert.Current()
	return c == nil || !time.Now().Before(c.Leaf.NotAfter)
}

// renewLoop renews the worker's certificate over mTLS, with its current
// one and no token, two thirds into its life, until ctx ends.
func (s *Server) renewLoop(ctx context.Context) {
	backoff := newBackoff(time.Second, time.Minute)
	for ctx.Err() == nil {
		wait := time.Second
		if c := s.id.cert.Current(); c != nil {
			wait = max(time.Until(pki.RenewAt(c.Leaf)), 0)
		}
		t := time.NewTimer(wait)
		select {
		case <-ctx.Done():
			t.Stop()
			return
		case <-t.C:
		}
		c := s.id.cert.Current()
		if c == nil || s.needsEnrolment() || !pki.NeedsRenewal(c.Leaf, time.Now()) {
			continue // not due, or the registration loop enrols
		}
		if err := s.requestCert(ctx, s.poolConn(), ""); err != nil {
			s.log.Warn("renewing the certificate", "err", err)
			backoff.wait(ctx)
			continue
		}
		backoff.reset()
	}
}
