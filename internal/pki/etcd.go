package pki

import (
	"crypto/tls"
	"crypto/x509"
	"errors"
	"fmt"
	"os"
	"path/filepath"
	"time"

	"github.com/hivemind/taskworker/internal/atomicfile"
)

// EtcdFiles are the PEM files of a TLS-locked etcd and of its one client,
// the pool.
type EtcdFiles struct {
	CA                    string // the CA's certificate
	ServerCert, ServerKey string // etcd's, for 127.0.0.1 (and its own peer port)
	ClientCert, ClientKey string // the pool's, common name PoolCommonName
}

// WriteEtcdFiles issues etcd's and the pool's certificates for an etcd on
// loopback and writes them, with the CA's certificate, under dir (0700;
// keys 0600). The pool calls it at every start, so they never outlive
// EtcdLifetime; the test harnesses call it to start their own etcd.
func WriteEtcdFiles(ca *CA, dir string) (EtcdFiles, error) {
	f := EtcdFiles{
		CA:         filepath.Join(dir, "ca.crt"),
		ServerCert: filepath.Join(dir, "etcd.crt"), ServerKey: filepath.Join(dir, "etcd.key"),
		ClientCert: filepath.Join(dir, "pool.crt"), ClientKey: filepath.Join(dir, "pool.key"),
	}
	server, err := ca.IssueKeyPair(Leaf{CommonName: "taskworker-etcd", Hosts: []string{"127.0.0.1", "::1", "localhost"},
		Server: true, Client: true, TTL: EtcdLifetime})
	if err != nil {
		return EtcdFiles{}, err
	}
	client, err := ca.IssueKeyPair(Leaf{CommonName: PoolCommonName, Client: true, TTL: EtcdLifetime})
	if err != nil {
		return EtcdFiles{}, err
	}
	if err := WriteKeyPair(f.ServerCert, f.ServerKey, server); err != nil {
		return EtcdFiles{}, fmt.Errorf("etcd's certificate: %w", err)
	}
	if err := WriteKeyPair(f.ClientCert, f.ClientKey, client); err != nil {
		return EtcdFiles{}, fmt.Errorf("the pool's etcd certificate: %w", err)
	}
	if err := atomicfile.Write(f.CA, ca.CertPEM(), 0o644); err != nil {
		return EtcdFiles{}, err
	}
	return f, nil
}

// EtcdClientConfig is the TLS configuration of a client of etcd: it
// verifies etcd against the CA in caFile and presents the certificate in
// certFile and keyFile.
func EtcdClientConfig(caFile, certFile, keyFile string) (*tls.Config, error) {
	caPEM, err := os.ReadFile(caFile)
	if err != nil {
		return nil, fmt.Errorf("etcd CA: %w", err)
	}
	pool := x509.NewCertPool()
	if !pool.AppendCertsFromPEM(caPEM) {
		return nil, fmt.Errorf("etcd CA %s: no PEM certificate in it", caFile)
	}
	cert, err := tls.LoadX509KeyPair(certFile, keyFile)
	if err != nil {
		return nil, fmt.Errorf("etcd client certificate %s and key %s: %w", certFile, keyFile, err)
	}
	if len(cert.Certificate) == 0 {
		return nil, errors.New("etcd client certificate: empty")
	}
	return &tls.Config{MinVersion: tls.VersionTLS12, RootCAs: pool, Certificates: []tls.Certificate{cert}}, nil
}

// EtcdMemberCN is the common name of an etcd cluster member's certificate
// (`taskworker init`): members admit as peers only certificates with it.
const EtcdMemberCN = "taskworker-etcd"

// WriteEtcdMember issues the certificate of one member of an etcd cluster,
// valid for hosts as a server and as a client of its peers, and writes it
// under dir as NAME.crt and NAME.key. ca should be etcd's own CA, not the
// network's: a certificate the network's CA signs, such as a worker's,
// must not open etcd.
func WriteEtcdMember(ca *CA, dir, name string, hosts []string, ttl time.Duration) (certFile, keyFile string, err error) {
	c, err := ca.IssueKeyPair(Leaf{CommonName: EtcdMemberCN, Hosts: hosts, Server: true, Client: true, TTL: ttl})
	if err != nil {
		return "", "", err
	}
	certFile, keyFile = filepath.Join(dir, name+".crt"), filepath.Join(dir, name+".key")
	return certFile, keyFile, WriteKeyPair(certFile, keyFile, c)
}

// WriteEtcdClient issues the pools' client certificate for an etcd cluster
// (common name PoolCommonName) and writes it under dir as pool.crt and
// pool.key.
func WriteEtcdClient(ca *CA, dir string, ttl time.Duration) (certFile, keyFile string, err error) {
	c, err := ca.IssueKeyPair(Leaf{CommonName: PoolCommonName, Client: true, TTL: ttl})
	if err != nil {
		return "", "", err
	}
	certFile, keyFile = filepath.Join(dir, "pool.crt"), filepath.Join(dir, "pool.key")
	return certFile, keyFile, WriteKeyPair(certFile, keyFile, c)
}
