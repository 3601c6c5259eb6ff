package pki

import (
	"crypto"
	"crypto/ecdsa"
	"crypto/elliptic"
	"crypto/rand"
	"crypto/sha256"
	"crypto/tls"
	"crypto/x509"
	"crypto/x509/pkix"
	"encoding/hex"
	"encoding/pem"
	"errors"
	"fmt"
	"net"
	"net/url"
	"strings"
	"time"

	"github.com/hivemind/taskworker/internal/atomicfile"
)

// PoolCommonName is the subject of every certificate the pool holds. The
// embedded etcd admits a client only with this name (and the CA's
// signature), and the CA never gives it to a worker: a worker's
// certificate has no common name at all.
const PoolCommonName = "taskworker-pool"

// Lifetimes of the certificates the pool issues.
const (
	// WorkerLifetime is a worker certificate's default lifetime; workers
	// renew at two thirds of it.
	WorkerLifetime = 24 * time.Hour
	// PoolLifetime is the pool's serving certificate's; it is renewed in
	// memory at two thirds of it.
	PoolLifetime = 7 * 24 * time.Hour
	// EtcdLifetime is that of the embedded etcd's certificates, issued
	// again at every start of the pool.
	EtcdLifetime = 365 * 24 * time.Hour
)

// backdate sets a certificate's NotBefore back, for clocks a little behind
// the issuer's.
const backdate = 5 * time.Minute

// Leaf describes a certificate to issue.
type Leaf struct {
	CommonName string
	// URIs are URI SANs: the SPIFFE-style identity (WorkerURI, PoolURI).
	URIs []string
	// Hosts are DNS names and IP addresses the certificate is valid for.
	Hosts []string
	// Server and Client set the extended key usages.
	Server, Client bool
	TTL            time.Duration
}

// Sign issues a certificate for pub, as l says, and returns it in DER.
func (ca *CA) Sign(pub crypto.PublicKey, l Leaf) ([]byte, error) {
	now := time.Now()
	tmpl := &x509.Certificate{
		SerialNumber: newSerial(),
		Subject:      pkix.Name{CommonName: l.CommonName},
		NotBefore:    now.Add(-backdate),
		NotAfter:     now.Add(l.TTL),
		KeyUsage:     x509.KeyUsageDigitalSignature,
	}
	if tmpl.NotAfter.After(ca.cert.NotAfter) {
		tmpl.NotAfter = ca.cert.NotAfter
	}
	if l.Server {
		tmpl.ExtKeyUsage = append(tmpl.ExtKeyUsage, x509.ExtKeyUsageServerAuth)
	}
	if l.Client {
		tmpl.ExtKeyUsage = append(tmpl.ExtKeyUsage, x509.ExtKeyUsageClientAuth)
	}
	for _, u := range l.URIs {
		parsed, err := url.Parse(u)
		if err != nil {
			return nil, fmt.Errorf("URI SAN %q: %w", u, err)
		}
		tmpl.URIs = append(tmpl.URIs, parsed)
	}
	for _, h := range l.Hosts {
		if ip := net.ParseIP(h); ip != nil {
			tmpl.IPAddresses = append(tmpl.IPAddresses, ip)
		} else if h != "" {
			tmpl.DNSNames = append(tmpl.DNSNames, h)
		}
	}
	return x509.CreateCertificate(rand.Reader, tmpl, ca.cert, pub, ca.key)
}

// IssueKeyPair makes a key and a certificate for it, as l says.
func (ca *CA) IssueKeyPair(l Leaf) (tls.Certificate, error) {
	key, err := NewKey()
	if err != nil {
		return tls.Certificate{}, err
	}
	der, err := ca.Sign(&key.PublicKey, l)
	if err != nil {
		return tls.Certificate{}, err
	}
	return KeyPair(der, key)
}

// KeyPair assembles a tls.Certificate (with its Leaf parsed).
func KeyPair(der []byte, key *ecdsa.PrivateKey) (tls.Certificate, error) {
	leaf, err := x509.ParseCertificate(der)
	if err != nil {
		return tls.Certificate{}, err
	}
	if !key.PublicKey.Equal(leaf.PublicKey) {
		return tls.Certificate{}, errors.New("the certificate is not for this key")
	}
	return tls.Certificate{Certificate: [][]byte{der}, PrivateKey: key, Leaf: leaf}, nil
}

// CheckCSR parses a PKCS#10 request, checks its signature, and returns its
// key, which must be ECDSA P-256. The request's names are ignored: the
// issuer names the certificate.
func CheckCSR(der []byte) (*ecdsa.PublicKey, error) {
	csr, err := x509.ParseCertificateRequest(der)
	if err != nil {
		return nil, fmt.Errorf("certificate request: %w", err)
	}
	if err := csr.CheckSignature(); err != nil {
		return nil, fmt.Errorf("certificate request: %w", err)
	}
	pub, ok := csr.PublicKey.(*ecdsa.PublicKey)
	if !ok || pub.Curve != elliptic.P256() {
		return nil, errors.New("certificate request: the key must be ECDSA P-256")
	}
	return pub, nil
}

// NewCSR makes a certificate request (DER) for key.
func NewCSR(key *ecdsa.PrivateKey) ([]byte, error) {
	return x509.CreateCertificateRequest(rand.Reader, &x509.CertificateRequest{}, key)
}

// KeyHash names a public key: the hex SHA-256 of its SubjectPublicKeyInfo.
// The pool binds a worker id to it.
func KeyHash(pub crypto.PublicKey) (string, error) {
	der, err := x509.MarshalPKIXPublicKey(pub)
	if err != nil {
		return "", err
	}
	sum := sha256.Sum256(der)
	return hex.EncodeToString(sum[:]), nil
}

// WriteKeyPair writes a certificate and its key in PEM: the key 0600, the
// certificate 0644, in a directory made owner-only.
func WriteKeyPair(certPath, keyPath string, c tls.Certificate) error {
	key, ok := c.PrivateKey.(*ecdsa.PrivateKey)
	if !ok {
		return fmt.Errorf("a %T key; only ECDSA keys are written", c.PrivateKey)
	}
	keyPEM, err := EncodeKey(key)
	if err != nil {
		return err
	}
	for _, dir := range []string{dirOf(certPath), dirOf(keyPath)} {
		if err := OwnerOnlyDir(dir); err != nil {
			return err
		}
	}
	if err := atomicfile.Write(keyPath, keyPEM, 0o600); err != nil {
		return err
	}
	var certPEM []byte
	for _, der := range c.Certificate {
		certPEM = append(certPEM, pem.EncodeToMemory(&pem.Block{Type: "CERTIFICATE", Bytes: der})...)
	}
	return atomicfile.Write(certPath, certPEM, 0o644)
}

func dirOf(path string) string {
	if i := strings.LastIndexByte(path, '/'); i > 0 {
		return path[:i]
	}
	return "."
}

// WorkerURI is a worker's identity: spiffe://<cluster>/worker/<id>.
func WorkerURI(cluster, id string) string { return "spiffe://" + cluster + "/worker/" + id }

// PoolURI is the pool's identity: spiffe://<cluster>/pool.
func PoolURI(cluster string) string { return "spiffe://" + cluster + "/pool" }

// Role is what a certificate's identity says its holder is.
type Role int

// The roles.
const (
	RoleNone Role = iota
	RolePool
	RoleWorker
)

// Identity is who a certificate names.
type Identity struct {
	Role     Role
	Cluster  string
	WorkerID string // for RoleWorker
}

// IdentityOf reads the identity a certificate names in its one URI SAN.
func IdentityOf(cert *x509.Certificate) (Identity, error) {
	if len(cert.URIs) != 1 {
		return Identity{}, fmt.Errorf("the certificate names %d URIs; a taskworker identity is exactly one spiffe:// URI", len(cert.URIs))
	}
	u := cert.URIs[0]
	if u.Scheme != "spiffe" || u.Host == "" || u.RawQuery != "" || u.Fragment != "" || u.User != nil {
		return Identity{}, fmt.Errorf("URI %q is not a spiffe://<cluster>/... identity", u)
	}
	switch {
	case u.Path == "/pool":
		return Identity{Role: RolePool, Cluster: u.Host}, nil
	case strings.HasPrefix(u.Path, "/worker/") && len(u.Path) > len("/worker/") && !strings.Contains(u.Path[len("/worker/"):], "/"):
		return Identity{Role: RoleWorker, Cluster: u.Host, WorkerID: u.Path[len("/worker/"):]}, nil
	}
	return Identity{}, fmt.Errorf("URI %q names neither the pool nor a worker", u)
}
