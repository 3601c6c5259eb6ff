package etcdserver_test

import (
	"context"
	"crypto/tls"
	"net"
	"net/http"
	"path/filepath"
	"strings"
	"testing"
	"time"

	clientv3 "go.etcd.io/etcd/client/v3"
	"go.uber.org/zap"

	"github.com/hivemind/taskworker/internal/etcdserver"
	"github.com/hivemind/taskworker/internal/pki"
)

// A locked etcd serves the pool's certificate and refuses everyone else: a
// plaintext client, a TLS client with no certificate, a certificate of the
// pool's name from a self-made CA, and a worker's certificate from the
// cluster's own CA.
func TestLockedEtcdAdmitsOnlyThePool(t *testing.T) {
	dir := t.TempDir()
	ca, err := pki.LoadOrCreateCA(dir + "/ca")
	if err != nil {
		t.Fatal(err)
	}
	cfg := etcdserver.DefaultConfig(dir + "/etcd")
	cfg.TickMs, cfg.ElectionMs = 10, 100
	var files pki.EtcdFiles
	if cfg.TLS, files, err = etcdserver.Locked(ca, dir+"/etcd-tls"); err != nil {
		t.Fatal(err)
	}
	ctx := context.Background()
	s, err := etcdserver.Start(ctx, cfg)
	if err != nil {
		t.Fatal(err)
	}
	defer s.Close()
	endpoint := s.Endpoints()[0]
	if !strings.HasPrefix(endpoint, "https://127.0.0.1:") {
		t.Fatalf("endpoint %s; want https on loopback", endpoint)
	}
	poolTLS, err := pki.EtcdClientConfig(files.CA, files.ClientCert, files.ClientKey)
	if err != nil {
		t.Fatal(err)
	}
	stranger, _ := pki.NewCA()
	withCert := func(issuer *pki.CA, leaf pki.Leaf) *tls.Config {
		c, err := issuer.IssueKeyPair(leaf)
		if err != nil {
			t.Fatal(err)
		}
		cfg := poolTLS.Clone()
		cfg.Certificates = []tls.Certificate{c}
		return cfg
	}
	noCert := poolTLS.Clone()
	noCert.Certificates = nil
	tests := []struct {
		name     string
		endpoint string
		tls      *tls.Config
		ok       bool
	}{
		{"the pool", endpoint, poolTLS, true},
		{"plaintext", strings.TrimPrefix(endpoint, "https://"), nil, false},
		{"TLS without a certificate", endpoint, noCert, false},
		{"the pool's name from a self-made CA", endpoint, withCert(stranger, pki.Leaf{CommonName: pki.PoolCommonName, Client: true, TTL: time.Hour}), false},
		{"a worker of the cluster", endpoint, withCert(ca, pki.Leaf{URIs: []string{pki.WorkerURI("tw-x", "w1")}, Client: true, Server: true, TTL: time.Hour}), false},
		{"another name from the cluster CA", endpoint, withCert(ca, pki.Leaf{CommonName: "admin", Client: true, TTL: time.Hour}), false},
	}
	// etcd's HTTP endpoints are on a socket in its data directory, behind
	// the same TLS: the pool's certificate reads /health, none gets nothing.
	for _, tt := range []struct {
		name string
		tls  *tls.Config
		ok   bool
	}{{"HTTP socket: the pool", poolTLS, true}, {"HTTP socket: TLS without a certificate", noCert, false}} {
		t.Run(tt.name, func(t *testing.T) {
			hc := &http.Client{Timeout: 3 * time.Second, Transport: &http.Transport{
				TLSClientConfig: tt.tls,
				DialContext: func(ctx context.Context, _, _ string) (net.Conn, error) {
					return (&net.Dialer{}).DialContext(ctx, "unix", filepath.Join(cfg.Dir, "http.sock"))
				},
			}}
			resp, err := hc.Get("https://127.0.0.1/health")
			if err == nil {
				resp.Body.Close()
			}
			if tt.ok != (err == nil && resp.StatusCode == http.StatusOK) {
				t.Fatalf("GET /health over the socket: %v; want ok %v", err, tt.ok)
			}
		})
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			cli, err := clientv3.New(clientv3.Config{Endpoints: []string{tt.endpoint}, TLS: tt.tls, DialTimeout: 3 * time.Second, Logger: zap.NewNop()})
			if err != nil {
				if tt.ok {
					t.Fatal(err)
				}
				return
			}
			defer cli.Close()
			cctx, cancel := context.WithTimeout(ctx, 3*time.Second)
			defer cancel()
			_, err = cli.Put(cctx, "/taskworker/tokens/forged", `{"user":"mallory","role":2}`)
			if tt.ok != (err == nil) {
				t.Fatalf("put: %v; want ok %v", err, tt.ok)
			}
		})
	}
}
