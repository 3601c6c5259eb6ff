package pki_test

import (
	"context"
	"crypto/rand"
	"crypto/rsa"
	"crypto/tls"
	"crypto/x509"
	"errors"
	"io/fs"
	"os"
	"path/filepath"
	"strings"
	"syscall"
	"testing"
	"time"

	"github.com/hivemind/taskworker/internal/pki"
)

// The CA is made once, owner-only whatever the umask, and read back the
// same; a CA with one of its two files missing is refused.
func TestLoadOrCreateCA(t *testing.T) {
	old := syscall.Umask(0)
	defer syscall.Umask(old)
	dir := filepath.Join(t.TempDir(), "pool")
	ca, err := pki.LoadOrCreateCA(dir)
	if err != nil {
		t.Fatal(err)
	}
	for path, want := range map[string]fs.FileMode{dir: 0o700, filepath.Join(dir, pki.CAKeyFile): 0o600} {
		fi, err := os.Stat(path)
		if err != nil || fi.Mode().Perm() != want {
			t.Errorf("%s: mode %v (%v); want %v", path, fi.Mode().Perm(), err, want)
		}
	}
	again, err := pki.LoadOrCreateCA(dir)
	if err != nil || !again.Cert().Equal(ca.Cert()) {
		t.Fatalf("loading the CA again: %v, same %v", err, err == nil && again.Cert().Equal(ca.Cert()))
	}
	if !ca.Cert().IsCA || !strings.HasPrefix(ca.Name(), "taskworker cluster CA ") {
		t.Errorf("CA certificate: IsCA %v, name %q", ca.Cert().IsCA, ca.Name())
	}
	if err := os.Remove(filepath.Join(dir, pki.CACertFile)); err != nil {
		t.Fatal(err)
	}
	if _, err := pki.LoadOrCreateCA(dir); err == nil || !strings.Contains(err.Error(), "missing") {
		t.Errorf("a CA key without its certificate: %v; want a refusal", err)
	}
}

func TestLoadCARefusesMismatchedFiles(t *testing.T) {
	a, b := t.TempDir(), t.TempDir()
	if _, err := pki.LoadOrCreateCA(a); err != nil {
		t.Fatal(err)
	}
	if _, err := pki.LoadOrCreateCA(b); err != nil {
		t.Fatal(err)
	}
	_, err := pki.LoadCA(filepath.Join(a, pki.CACertFile), filepath.Join(b, pki.CAKeyFile))
	if err == nil || !strings.Contains(err.Error(), "does not belong") {
		t.Fatalf("a CA certificate with another CA's key: %v", err)
	}
}

// A worker's certificate is issued from its CSR: for its key, naming only
// the worker, whatever the CSR asked for.
func TestSignCSR(t *testing.T) {
	ca, err := pki.NewCA()
	if err != nil {
		t.Fatal(err)
	}
	key, err := pki.NewKey()
	if err != nil {
		t.Fatal(err)
	}
	csr, err := x509.CreateCertificateRequest(rand.Reader, &x509.CertificateRequest{DNSNames: []string{"pool.example"}}, key)
	if err != nil {
		t.Fatal(err)
	}
	pub, err := pki.CheckCSR(csr)
	if err != nil {
		t.Fatal(err)
	}
	der, err := ca.Sign(pub, pki.Leaf{URIs: []string{pki.WorkerURI("tw-net", "worker_001")}, Server: true, Client: true, TTL: time.Hour})
	if err != nil {
		t.Fatal(err)
	}
	c, err := pki.KeyPair(der, key)
	if err != nil {
		t.Fatal(err)
	}
	if len(c.Leaf.DNSNames) != 0 || c.Leaf.Subject.CommonName != "" {
		t.Errorf("the certificate took names from the CSR: %v %q", c.Leaf.DNSNames, c.Leaf.Subject.CommonName)
	}
	who, err := pki.IdentityOf(c.Leaf)
	if err != nil || who != (pki.Identity{Role: pki.RoleWorker, Cluster: "tw-net", WorkerID: "worker_001"}) {
		t.Errorf("identity %+v, %v", who, err)
	}
	if _, err := c.Leaf.Verify(x509.VerifyOptions{Roots: ca.Pool(), KeyUsages: []x509.ExtKeyUsage{x509.ExtKeyUsageClientAuth}}); err != nil {
		t.Errorf("the worker's certificate does not verify as a client: %v", err)
	}
	other, _ := pki.NewKey()
	if _, err := pki.KeyPair(der, other); err == nil {
		t.Error("a certificate paired with another key")
	}
}

func TestCheckCSRRefuses(t *testing.T) {
	rsaKey, err := rsa.GenerateKey(rand.Reader, 2048)
	if err != nil {
		t.Fatal(err)
	}
	rsaCSR, _ := x509.CreateCertificateRequest(rand.Reader, &x509.CertificateRequest{}, rsaKey)
	key, _ := pki.NewKey()
	good, _ := pki.NewCSR(key)
	tampered := append([]byte(nil), good...)
	tampered[len(tampered)-3] ^= 0xff
	for name, csr := range map[string][]byte{"rsa": rsaCSR, "tampered": tampered, "garbage": []byte("not a csr"), "empty": nil} {
		if _, err := pki.CheckCSR(csr); err == nil {
			t.Errorf("%s CSR accepted", name)
		}
	}
}

func TestIdentityOf(t *testing.T) {
	ca, _ := pki.NewCA()
	tests := []struct {
		uris []string
		want pki.Identity
		ok   bool
	}{
		{[]string{"spiffe://tw-a/pool"}, pki.Identity{Role: pki.RolePool, Cluster: "tw-a"}, true},
		{[]string{"spiffe://tw-a/worker/w1"}, pki.Identity{Role: pki.RoleWorker, Cluster: "tw-a", WorkerID: "w1"}, true},
		{nil, pki.Identity{}, false},
		{[]string{"spiffe://tw-a/pool", "spiffe://tw-a/worker/w1"}, pki.Identity{}, false},
		{[]string{"https://tw-a/pool"}, pki.Identity{}, false},
		{[]string{"spiffe://tw-a/worker/"}, pki.Identity{}, false},
		{[]string{"spiffe://tw-a/worker/w1/x"}, pki.Identity{}, false},
		{[]string{"spiffe://tw-a/admin"}, pki.Identity{}, false},
		{[]string{"spiffe:///pool"}, pki.Identity{}, false},
	}
	for _, tt := range tests {
		c, err := ca.IssueKeyPair(pki.Leaf{URIs: tt.uris, Client: true, TTL: time.Hour})
		if err != nil {
			t.Fatal(err)
		}
		got, err := pki.IdentityOf(c.Leaf)
		if (err == nil) != tt.ok || got != tt.want {
			t.Errorf("IdentityOf(%v) = %+v, %v; want %+v, ok %v", tt.uris, got, err, tt.want, tt.ok)
		}
	}
}

// A holder renews its certificate two thirds into its life, and keeps a
// still valid one when renewing fails.
func TestHolderRenews(t *testing.T) {
	ca, _ := pki.NewCA()
	ttl := time.Hour
	fail := false
	issued := 0
	h, err := pki.NewHolder(func() (tls.Certificate, error) {
		if fail {
			return tls.Certificate{}, errors.New("no")
		}
		issued++
		return ca.IssueKeyPair(pki.Leaf{Server: true, TTL: ttl})
	})
	if err != nil {
		t.Fatal(err)
	}
	first, _ := h.Get()
	if again, _ := h.Get(); again != first || issued != 1 {
		t.Fatalf("a fresh certificate was renewed (issued %d)", issued)
	}
	// A certificate issued for 6 s is due two thirds on. x509 keeps whole
	// seconds, so its life may be up to a second shorter than asked: wait
	// for the time it says, which leaves it valid for a second or more.
	ttl = 6 * time.Second
	h2, _ := pki.NewHolder(func() (tls.Certificate, error) {
		if fail {
			return tls.Certificate{}, errors.New("no")
		}
		issued++
		return ca.IssueKeyPair(pki.Leaf{Server: true, TTL: ttl})
	})
	c1 := h2.Current()
	if pki.NeedsRenewal(c1.Leaf, time.Now()) {
		t.Fatal("a fresh certificate is due")
	}
	time.Sleep(time.Until(pki.RenewAt(c1.Leaf)) + 50*time.Millisecond)
	if !pki.NeedsRenewal(c1.Leaf, time.Now()) {
		t.Fatal("a certificate past two thirds of its life is not due")
	}
	fail = true
	if c, err := h2.Get(); err != nil || c != c1 {
		t.Errorf("renewal failing with a valid certificate: %v, same %v", err, c == c1)
	}
	fail = false
	if c, err := h2.Get(); err != nil || c == c1 {
		t.Errorf("a due certificate was not renewed: %v", err)
	}
	empty := &pki.Holder{}
	if _, err := empty.Get(); !errors.Is(err, pki.ErrNoCertificate) {
		t.Errorf("an empty holder: %v", err)
	}
}

// A client refuses a server its CA did not sign, saying which CA signed it
// and which one it holds; a server certificate for another name or
// identity; and accepts the right one.
func TestClientVerify(t *testing.T) {
	ca, _ := pki.NewCA()
	stranger, _ := pki.NewCA()
	serve := func(issuer *pki.CA, uri string, hosts ...string) string {
		c, err := issuer.IssueKeyPair(pki.Leaf{CommonName: pki.PoolCommonName, URIs: []string{uri}, Hosts: hosts, Server: true, TTL: time.Hour})
		if err != nil {
			t.Fatal(err)
		}
		h := &pki.Holder{}
		h.Set(c)
		lis, err := tls.Listen("tcp", "127.0.0.1:0", pki.ServerConfig(h, issuer.Pool()))
		if err != nil {
			t.Fatal(err)
		}
		t.Cleanup(func() { lis.Close() })
		go func() {
			for {
				conn, err := lis.Accept()
				if err != nil {
					return
				}
				_ = conn.(*tls.Conn).Handshake()
				conn.Close()
			}
		}()
		return lis.Addr().String()
	}
	dial := func(addr string, v pki.Verify) error {
		v.Host = pki.HostOf(addr)
		d := tls.Dialer{Config: pki.ClientConfig(v, nil)}
		ctx, cancel := context.WithTimeout(context.Background(), 10*time.Second)
		defer cancel()
		conn, err := d.DialContext(ctx, "tcp", addr)
		if err == nil {
			conn.Close()
		}
		return err
	}
	good := serve(ca, pki.PoolURI("tw-a"), "127.0.0.1")
	tests := []struct {
		name string
		addr string
		v    pki.Verify
		want string // "" for success
	}{
		{"trusted", good, pki.Verify{CA: ca.Pool()}, ""},
		{"trusted, by identity", good, pki.Verify{CA: ca.Pool(), URI: pki.PoolURI("tw-a")}, ""},
		{"another CA", serve(stranger, pki.PoolURI("tw-a"), "127.0.0.1"), pki.Verify{CA: ca.Pool(), CAName: "the CA in /x/ca.crt"},
			`issued by "` + stranger.Name() + `", and this client trusts only the CA in /x/ca.crt`},
		{"no CA given", good, pki.Verify{}, "this system's trusted CAs (no --ca given)"},
		{"another name", serve(ca, pki.PoolURI("tw-a"), "pool.example"), pki.Verify{CA: ca.Pool()}, "--tls-san 127.0.0.1"},
		{"another identity", good, pki.Verify{CA: ca.Pool(), URI: pki.WorkerURI("tw-a", "w1")}, "not spiffe://tw-a/worker/w1"},
		{"a last check refuses", good, pki.Verify{CA: ca.Pool(), Check: func(*x509.Certificate) error { return errors.New("revoked") }}, "revoked"},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			err := dial(tt.addr, tt.v)
			switch {
			case tt.want == "" && err != nil:
				t.Fatalf("refused: %v", err)
			case tt.want != "" && (err == nil || !strings.Contains(err.Error(), tt.want)):
				t.Fatalf("got %v; want an error containing %q", err, tt.want)
			}
		})
	}
}

// The etcd files are owner-only, and the pool's client certificate is the
// only one with the pool's name.
func TestWriteEtcdFiles(t *testing.T) {
	ca, _ := pki.NewCA()
	dir := filepath.Join(t.TempDir(), "etcd-tls")
	f, err := pki.WriteEtcdFiles(ca, dir)
	if err != nil {
		t.Fatal(err)
	}
	for _, key := range []string{f.ServerKey, f.ClientKey} {
		if fi, err := os.Stat(key); err != nil || fi.Mode().Perm() != 0o600 {
			t.Errorf("%s: %v", key, err)
		}
	}
	client, err := pki.ReadCertFile(f.ClientCert)
	if err != nil || client.Subject.CommonName != pki.PoolCommonName {
		t.Fatalf("client certificate: %v", err)
	}
	server, _ := pki.ReadCertFile(f.ServerCert)
	if err := server.VerifyHostname("127.0.0.1"); err != nil {
		t.Error(err)
	}
	if _, err := pki.EtcdClientConfig(f.CA, f.ClientCert, f.ClientKey); err != nil {
		t.Error(err)
	}
}

func TestHostOf(t *testing.T) {
	for in, want := range map[string]string{"pool:50051": "pool", "dns:///pool:50051": "pool", "127.0.0.1:1": "127.0.0.1", "[::1]:1": "::1", "passthrough:///10.0.0.1:7": "10.0.0.1"} {
		if got := pki.HostOf(in); got != want {
			t.Errorf("HostOf(%q) = %q; want %q", in, got, want)
		}
	}
}
