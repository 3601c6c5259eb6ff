package pki

import (
	"crypto/ecdsa"
	"crypto/elliptic"
	"crypto/rand"
	"crypto/x509"
	"crypto/x509/pkix"
	"encoding/hex"
	"encoding/pem"
	"errors"
	"fmt"
	"io/fs"
	"math/big"
	"os"
	"path/filepath"
	"time"

	"github.com/hivemind/taskworker/internal/atomicfile"
)

// Files of a CA directory (the pool's data directory).
const (
	CACertFile = "ca.crt"
	CAKeyFile  = "ca.key"
)

// caLifetime is how long a CA the pool makes is valid.
const caLifetime = 10 * 365 * 24 * time.Hour

// CA is the cluster's certificate authority: it signs the pool's and the
// workers' certificates. Its key never leaves the pool.
type CA struct {
	cert    *x509.Certificate
	certPEM []byte
	key     *ecdsa.PrivateKey
	pool    *x509.CertPool
}

// LoadOrCreateCA returns the CA kept in dir (ca.crt, ca.key), making one on
// first use. dir is made owner-only (0700) and the key file is 0600,
// whatever the umask.
func LoadOrCreateCA(dir string) (*CA, error) {
	certPath, keyPath := filepath.Join(dir, CACertFile), filepath.Join(dir, CAKeyFile)
	_, certErr := os.Stat(certPath)
	_, keyErr := os.Stat(keyPath)
	switch {
	case certErr == nil && keyErr == nil:
		return LoadCA(certPath, keyPath)
	case errors.Is(certErr, fs.ErrNotExist) && errors.Is(keyErr, fs.ErrNotExist):
	case certErr == nil || keyErr == nil:
		return nil, fmt.Errorf("CA in %s: one of %s and %s is missing; restore it, or remove both to make a new CA (every worker must then enrol again)", dir, CACertFile, CAKeyFile)
	default:
		return nil, fmt.Errorf("CA in %s: %w", dir, errors.Join(certErr, keyErr))
	}
	ca, err := NewCA()
	if err != nil {
		return nil, err
	}
	if err := OwnerOnlyDir(dir); err != nil {
		return nil, err
	}
	keyPEM, err := EncodeKey(ca.key)
	if err != nil {
		return nil, err
	}
	// The key first: a crash between the two leaves a key and no
	// certificate, which the check above reports instead of reusing.
	if err := atomicfile.Write(keyPath, keyPEM, 0o600); err != nil {
		return nil, fmt.Errorf("writing the CA key: %w", err)
	}
	if err := atomicfile.Write(certPath, ca.certPEM, 0o644); err != nil {
		return nil, fmt.Errorf("writing the CA certificate: %w", err)
	}
	return ca, nil
}

// NewCA makes a CA in memory (ECDSA P-256, self-signed).
func NewCA() (*CA, error) {
	key, err := NewKey()
	if err != nil {
		return nil, err
	}
	suffix := make([]byte, 4)
	_, _ = rand.Read(suffix)
	now := time.Now()
	tmpl := &x509.Certificate{
		SerialNumber:          newSerial(),
		Subject:               pkix.Name{Organization: []string{"taskworker"}, CommonName: "taskworker cluster CA " + hex.EncodeToString(suffix)},
		NotBefore:             now.Add(-time.Hour),
		NotAfter:              now.Add(caLifetime),
		KeyUsage:              x509.KeyUsageCertSign | x509.KeyUsageCRLSign | x509.KeyUsageDigitalSignature,
		BasicConstraintsValid: true,
		IsCA:                  true,
		MaxPathLenZero:        true,
	}
	der, err := x509.CreateCertificate(rand.Reader, tmpl, tmpl, &key.PublicKey, key)
	if err != nil {
		return nil, fmt.Errorf("making the CA certificate: %w", err)
	}
	return newCA(der, key)
}

// LoadCA reads a CA from a certificate and a key file in PEM: the pool's
// own, or one the operator gives (--ca-cert, --ca-key).
func LoadCA(certFile, keyFile string) (*CA, error) {
	cert, err := ReadCertFile(certFile)
	if err != nil {
		return nil, err
	}
	keyPEM, err := os.ReadFile(keyFile)
	if err != nil {
		return nil, fmt.Errorf("reading the CA key: %w", err)
	}
	key, err := DecodeKey(keyPEM)
	if err != nil {
		return nil, fmt.Errorf("CA key %s: %w", keyFile, err)
	}
	if !cert.IsCA {
		return nil, fmt.Errorf("%s is not a CA certificate (basic constraints CA:FALSE); give the CA's own certificate", certFile)
	}
	if !key.PublicKey.Equal(cert.PublicKey) {
		return nil, fmt.Errorf("CA key %s does not belong to the certificate %s; give the pair that belong together", keyFile, certFile)
	}
	return newCA(cert.Raw, key)
}

func newCA(der []byte, key *ecdsa.PrivateKey) (*CA, error) {
	cert, err := x509.ParseCertificate(der)
	if err != nil {
		return nil, err
	}
	pool := x509.NewCertPool()
	pool.AddCert(cert)
	return &CA{cert: cert, certPEM: pem.EncodeToMemory(&pem.Block{Type: "CERTIFICATE", Bytes: der}), key: key, pool: pool}, nil
}

// Cert returns the CA's certificate.
func (ca *CA) Cert() *x509.Certificate { return ca.cert }

// CertPEM returns the CA's certificate in PEM, as clients are given it.
func (ca *CA) CertPEM() []byte { return ca.certPEM }

// Pool returns a pool holding only the CA, to verify peers with.
func (ca *CA) Pool() *x509.CertPool { return ca.pool }

// Name is the CA's subject, as error messages name it.
func (ca *CA) Name() string { return ca.cert.Subject.CommonName }

// ReadCertFile reads the first certificate of a PEM file.
func ReadCertFile(path string) (*x509.Certificate, error) {
	b, err := os.ReadFile(path)
	if err != nil {
		return nil, fmt.Errorf("reading certificate: %w", err)
	}
	cert, err := ParseCertPEM(b)
	if err != nil {
		return nil, fmt.Errorf("%s: %w", path, err)
	}
	return cert, nil
}

// ParseCertPEM parses the first certificate of PEM data.
func ParseCertPEM(b []byte) (*x509.Certificate, error) {
	for {
		var block *pem.Block
		block, b = pem.Decode(b)
		if block == nil {
			return nil, errors.New("no PEM CERTIFICATE block")
		}
		if block.Type == "CERTIFICATE" {
			return x509.ParseCertificate(block.Bytes)
		}
	}
}

// NewKey makes an ECDSA P-256 key.
func NewKey() (*ecdsa.PrivateKey, error) {
	return ecdsa.GenerateKey(elliptic.P256(), rand.Reader)
}

// EncodeKey encodes a key as PKCS#8 PEM.
func EncodeKey(key *ecdsa.PrivateKey) ([]byte, error) {
	der, err := x509.MarshalPKCS8PrivateKey(key)
	if err != nil {
		return nil, err
	}
	return pem.EncodeToMemory(&pem.Block{Type: "PRIVATE KEY", Bytes: der}), nil
}

// DecodeKey decodes an ECDSA key in PEM (PKCS#8 or SEC 1).
func DecodeKey(b []byte) (*ecdsa.PrivateKey, error) {
	block, _ := pem.Decode(b)
	if block == nil {
		return nil, errors.New("no PEM block")
	}
	switch block.Type {
	case "EC PRIVATE KEY":
		return x509.ParseECPrivateKey(block.Bytes)
	case "PRIVATE KEY":
		k, err := x509.ParsePKCS8PrivateKey(block.Bytes)
		if err != nil {
			return nil, err
		}
		ec, ok := k.(*ecdsa.PrivateKey)
		if !ok {
			return nil, fmt.Errorf("a %T key; only ECDSA keys are supported", k)
		}
		return ec, nil
	}
	return nil, fmt.Errorf("PEM block %q is not a private key", block.Type)
}

// OwnerOnlyDir makes dir (and its parents) and sets it to 0700, whatever
// the umask and whatever it was before.
func OwnerOnlyDir(dir string) error {
	if err := os.MkdirAll(dir, 0o700); err != nil {
		return err
	}
	return os.Chmod(dir, 0o700)
}

func newSerial() *big.Int {
	n, _ := rand.Int(rand.Reader, new(big.Int).Lsh(big.NewInt(1), 127))
	return n.Add(n, big.NewInt(1))
}
