package pki

import (
	"context"
	"crypto/tls"
	"crypto/x509"
	"errors"
	"fmt"
	"net"
	"strings"

	"google.golang.org/grpc/credentials"
	"google.golang.org/grpc/peer"
)

// ServerConfig is the TLS configuration of a server presenting h's
// certificate (the pool, a worker). It verifies a client certificate when
// one is given, against ca, but asks for none: health checks and
// enrolment need no certificate, and who may call what is decided per
// method from the verified identity (PeerIdentity).
func ServerConfig(h *Holder, ca *x509.CertPool) *tls.Config {
	return &tls.Config{
		MinVersion: tls.VersionTLS12,
		GetCertificate: func(*tls.ClientHelloInfo) (*tls.Certificate, error) {
			return h.Get()
		},
		ClientAuth: tls.VerifyClientCertIfGiven,
		ClientCAs:  ca,
	}
}

// Verify says how a client checks the server it dials.
type Verify struct {
	// CA verifies the server's chain; nil uses the system's roots.
	CA *x509.CertPool
	// CAName names the CA in errors: where the client got it (a file).
	CAName string
	// Host is the name or address the client dials (see HostOf), which the
	// server's certificate must hold, unless URI is set.
	Host string
	// URI, when set, is the identity the server must name (WorkerURI,
	// PoolURI), checked instead of its host name: the pool dials workers
	// by whatever address they registered.
	URI string
	// Check, when set, is a last check of the server's verified
	// certificate (e.g. that its key is not revoked).
	Check func(leaf *x509.Certificate) error
}

// ClientConfig is the TLS configuration of a client: it verifies the
// server as v says, with errors that name the CA the client needs, and
// presents h's certificate (nil: none). It keeps TLS sessions for
// resumption, so reconnecting costs less than a full handshake.
func ClientConfig(v Verify, h *Holder) *tls.Config {
	cfg := &tls.Config{
		MinVersion: tls.VersionTLS12,
		// Verified in VerifyConnection below, which can say which CA is
		// missing; the standard check cannot.
		InsecureSkipVerify: true,
		VerifyConnection:   v.verify,
		ClientSessionCache: tls.NewLRUClientSessionCache(64),
	}
	if h != nil {
		cfg.GetClientCertificate = func(*tls.CertificateRequestInfo) (*tls.Certificate, error) {
			if c := h.Current(); c != nil {
				return c, nil
			}
			return &tls.Certificate{}, nil // none yet: enrolment needs none
		}
	}
	return cfg
}

// ErrUntrusted marks a server certificate not signed by the client's CA.
var ErrUntrusted = errors.New("untrusted certificate")

func (v Verify) verify(cs tls.ConnectionState) error {
	if len(cs.PeerCertificates) == 0 {
		return errors.New("the server presented no certificate")
	}
	leaf := cs.PeerCertificates[0]
	opts := x509.VerifyOptions{Roots: v.CA, Intermediates: x509.NewCertPool(), KeyUsages: []x509.ExtKeyUsage{x509.ExtKeyUsageServerAuth}}
	for _, c := range cs.PeerCertificates[1:] {
		opts.Intermediates.AddCert(c)
	}
	if v.URI == "" {
		// Not cs.ServerName: it is empty when the host is an IP address.
		if opts.DNSName = v.Host; opts.DNSName == "" {
			return errors.New("pki: a client that checks no identity must check the server's name: set Verify.Host")
		}
	}
	if _, err := leaf.Verify(opts); err != nil {
		var unknown x509.UnknownAuthorityError
		if errors.As(err, &unknown) {
			return fmt.Errorf("%w: the server's certificate is issued by %q, and this client trusts only %s: give it that network's CA certificate with --ca or TASKWORKER_CA (ca.crt in the pool's data directory; 'taskworker up' names it in its env file)",
				ErrUntrusted, leaf.Issuer.CommonName, v.caName())
		}
		var host x509.HostnameError
		if errors.As(err, &host) {
			return fmt.Errorf("%w: %v; dial the pool by a name its certificate holds, or start the pool with --tls-san %s", ErrUntrusted, err, v.Host)
		}
		return fmt.Errorf("%w: %v (CA: %s)", ErrUntrusted, err, v.caName())
	}
	if v.URI != "" {
		if len(leaf.URIs) != 1 || leaf.URIs[0].String() != v.URI {
			return fmt.Errorf("%w: the server's certificate names %v, not %s", ErrUntrusted, leaf.URIs, v.URI)
		}
	}
	if v.Check != nil {
		return v.Check(leaf)
	}
	return nil
}

func (v Verify) caName() string {
	switch {
	case v.CAName != "":
		return v.CAName
	case v.CA == nil:
		return "this system's trusted CAs (no --ca given)"
	}
	return "the CA this client was given"
}

// HostOf returns the host of a gRPC target: "pool:50051" and
// "dns:///pool:50051" give "pool".
func HostOf(target string) string {
	if i := strings.Index(target, "://"); i >= 0 {
		target = target[i+3:]
		if j := strings.IndexByte(target, '/'); j >= 0 {
			target = target[j+1:]
		}
	}
	if host, _, err := net.SplitHostPort(target); err == nil {
		return host
	}
	return target
}

// PeerCertificate returns the verified certificate of a gRPC call's peer,
// or nil when the peer presented none (or the connection has no TLS).
func PeerCertificate(ctx context.Context) *x509.Certificate {
	p, ok := peer.FromContext(ctx)
	if !ok {
		return nil
	}
	info, ok := p.AuthInfo.(credentials.TLSInfo)
	if !ok || len(info.State.VerifiedChains) == 0 || len(info.State.VerifiedChains[0]) == 0 {
		return nil
	}
	return info.State.VerifiedChains[0][0]
}

// PeerIdentity returns the identity a call's peer proved with its
// certificate, and the certificate.
func PeerIdentity(ctx context.Context) (Identity, *x509.Certificate, error) {
	cert := PeerCertificate(ctx)
	if cert == nil {
		return Identity{}, nil, errors.New("the caller presented no certificate of this network")
	}
	id, err := IdentityOf(cert)
	return id, cert, err
}
