// Package etcdserver runs a single-node etcd inside the pool process: the
// embedded default for the control plane's state, kept in the pool's data
// directory. Users who outgrow one machine point the pool at a real etcd
// cluster instead (--etcd-endpoints) and never start this.
//
// # Caveats
//
// With Config.TLS (what the pool always sets unless --insecure) etcd serves
// clients and its peer port over TLS and admits only a client certificate
// signed by the given CA with the allowed common name: the pool's. Nothing
// else on the machine can read or write the control plane. The pool that
// embeds it does not use that port: it calls etcd in process (Client).
//
// A single node serves only gRPC on its client port; etcd's HTTP endpoints
// (/health, /metrics, the JSON gateway) are on the unix socket http.sock in
// its data directory (0700), behind the same TLS when there is one.
//
// One node has no redundancy: losing its disk loses the control plane's
// state (worker registry, tokens, manifests). The peer port listens on
// loopback only; it is needed by etcd even with one member.
package etcdserver

import (
	"context"
	"errors"
	"fmt"
	"net/url"
	"os"
	"path/filepath"
	"sync"
	"time"

	"go.etcd.io/etcd/client/pkg/v3/transport"
	"go.etcd.io/etcd/server/v3/embed"
	"go.uber.org/zap"

	"github.com/hivemind/taskworker/internal/pki"
)

// Config configures the embedded etcd.
type Config struct {
	// Dir holds etcd's data (required).
	Dir string
	// ClientURL is where etcd serves clients. Port 0 picks a free port.
	ClientURL string
	// Member, when set, makes this etcd one member of a cluster instead of
	// a single node on loopback (`taskworker etcd`).
	Member *Member
	// TickMs and ElectionMs are etcd's heartbeat interval and election
	// timeout. Start-up takes about one election timeout; the shortest lease
	// etcd grants is about 1.5 times it.
	TickMs, ElectionMs uint
	// QuotaBackendBytes caps the database size.
	QuotaBackendBytes int64
	// StartTimeout bounds how long Start waits for etcd to be ready.
	StartTimeout time.Duration
	// TLS, when set, serves clients and peers over TLS and requires a
	// client certificate (see TLS).
	TLS *TLS
	// Logger receives etcd's own logs; nil discards them (etcd logs
	// expected shutdown events as errors; real failures come through Err).
	Logger *zap.Logger
}

// Member places an etcd in a cluster of several: its name, the URLs it
// listens on and those it gives the others, and the whole cluster's peers.
type Member struct {
	Name string
	// ListenClient and ListenPeer are where it listens (https://0.0.0.0:2379);
	// AdvertiseClient and AdvertisePeer how others reach it
	// (https://etcd1:2379).
	ListenClient, AdvertiseClient, ListenPeer, AdvertisePeer string
	// InitialCluster lists every member's name=peer URL, this one's too.
	InitialCluster string
	// PeerCN is the common name peers' certificates must have.
	PeerCN string
}

// TLS are the PEM files of etcd's TLS: its certificate and key (valid for
// 127.0.0.1, server and client use, as it is its own peer), the CA that
// signs clients, and the one common name a client certificate must have.
type TLS struct {
	CertFile, KeyFile, TrustedCAFile string
	AllowedCN                        string
}

// DefaultConfig returns the configuration used by `taskworker pool` and
// `taskworker up`: loopback only, a free port, a 2 GiB quota.
func DefaultConfig(dir string) Config {
	return Config{
		Dir:               dir,
		ClientURL:         "http://127.0.0.1:0",
		TickMs:            50,
		ElectionMs:        500,
		QuotaBackendBytes: 2 << 30,
		StartTimeout:      30 * time.Second,
	}
}

// Validate reports a configuration that cannot work, saying what to change.
func (c Config) Validate() error {
	if c.Dir == "" {
		return errors.New("etcd: Dir is empty; set the pool's --data-dir")
	}
	if _, err := url.Parse(c.ClientURL); err != nil {
		return fmt.Errorf("etcd: client URL %q: %w", c.ClientURL, err)
	}
	if c.TickMs == 0 || c.ElectionMs < 5*c.TickMs {
		return fmt.Errorf("etcd: election timeout (%d ms) must be at least 5 times the tick (%d ms)", c.ElectionMs, c.TickMs)
	}
	if m := c.Member; m != nil {
		if m.Name == "" || m.InitialCluster == "" {
			return errors.New("etcd: a cluster member needs --name and --initial-cluster")
		}
		for flag, u := range map[string]string{"--listen-client": m.ListenClient, "--advertise-client": m.AdvertiseClient,
			"--listen-peer": m.ListenPeer, "--advertise-peer": m.AdvertisePeer} {
			if _, err := url.Parse(u); err != nil || u == "" {
				return fmt.Errorf("etcd: %s %q is not a URL like https://etcd1:2379", flag, u)
			}
		}
		if c.TLS == nil {
			return errors.New("etcd: a cluster member needs TLS: --cert, --key and --ca")
		}
	}
	if c.TLS != nil && (c.TLS.CertFile == "" || c.TLS.KeyFile == "" || c.TLS.TrustedCAFile == "" || c.TLS.AllowedCN == "") {
		return errors.New("etcd: TLS needs a certificate, a key, a CA and the allowed client name")
	}
	if c.QuotaBackendBytes > 8<<30 {
		return fmt.Errorf("etcd: quota %d bytes is over etcd's 8 GiB maximum; lower it", c.QuotaBackendBytes)
	}
	return nil
}

// maxSocketPath bounds a unix socket's path: 104 bytes on the BSDs, 108
// on Linux, with the terminating zero.
const maxSocketPath = 100

// Server is a running embedded etcd.
type Server struct {
	etcd *embed.Etcd
	tls  bool
	// calls admits the in-process clients' requests until Close.
	calls     gate
	closeOnce sync.Once
}

// Start starts etcd and waits until it serves.
func Start(ctx context.Context, c Config) (*Server, error) {
	if err := c.Validate(); err != nil {
		return nil, err
	}
	curl, _ := url.Parse(c.ClientURL)
	purl, _ := url.Parse("http://127.0.0.1:0")
	cfg := embed.NewConfig()
	if c.TLS != nil {
		curl.Scheme, purl.Scheme = "https", "https"
		info := transport.TLSInfo{
			CertFile:       c.TLS.CertFile,
			KeyFile:        c.TLS.KeyFile,
			TrustedCAFile:  c.TLS.TrustedCAFile,
			ClientCertAuth: true,
			AllowedCNs:     []string{c.TLS.AllowedCN},
		}
		cfg.ClientTLSInfo, cfg.PeerTLSInfo = info, info
	}
	cfg.Name = "taskworker"
	cfg.Dir = c.Dir
	cfg.ListenClientUrls = []url.URL{*curl}
	cfg.AdvertiseClientUrls = []url.URL{*curl}
	cfg.ListenPeerUrls = []url.URL{*purl}
	cfg.AdvertisePeerUrls = []url.URL{*purl}
	cfg.InitialCluster = cfg.InitialClusterFromName(cfg.Name)
	// gRPC alone on the client port, served by gRPC's own server; etcd's
	// HTTP endpoints on a unix socket in its data directory. On one port
	// etcd serves gRPC through net/http's HTTP/2 server, which costs the
	// pool about a fifth of its CPU per small write (RATIONALE.md, "Why
	// does etcd serve HTTP on a socket of its own?"). A data directory too
	// deep for a socket's path keeps the one port.
	if sock := filepath.Join(c.Dir, "http.sock"); c.Member == nil && len(sock) < maxSocketPath {
		scheme := "unix"
		if c.TLS != nil {
			scheme = "unixs"
		}
		if err := os.MkdirAll(c.Dir, 0o700); err != nil {
			return nil, fmt.Errorf("etcd data directory: %w", err)
		}
		cfg.ListenClientHttpUrls = []url.URL{{Scheme: scheme, Host: sock}}
	}
	if m := c.Member; m != nil {
		parse := func(s string) []url.URL { u, _ := url.Parse(s); return []url.URL{*u} }
		cfg.Name, cfg.InitialCluster, cfg.InitialClusterToken = m.Name, m.InitialCluster, "taskworker"
		cfg.ListenClientUrls, cfg.AdvertiseClientUrls = parse(m.ListenClient), parse(m.AdvertiseClient)
		cfg.ListenPeerUrls, cfg.AdvertisePeerUrls = parse(m.ListenPeer), parse(m.AdvertisePeer)
		cfg.PeerTLSInfo.AllowedCNs = []string{m.PeerCN}
		// A member that starts before the others waits for them.
		cfg.StrictReconfigCheck = true
	}
	cfg.TickMs = c.TickMs
	cfg.ElectionMs = c.ElectionMs
	cfg.QuotaBackendBytes = c.QuotaBackendBytes
	// Keep a day of history for Synchronous cursors and watches; older
	// cursors get ErrCompacted and must resync.
	cfg.AutoCompactionMode = "periodic"
	cfg.AutoCompactionRetention = "24h"
	cfg.Metrics = "basic"
	lg := c.Logger
	if lg == nil {
		lg = zap.NewNop()
		// etcd formats every request slower than these for a warning,
		// even for a logger that discards it: on a loaded machine, a few
		// percent of the pool's CPU spent on text nobody reads.
		cfg.WarningUnaryRequestDuration, cfg.WarningApplyDuration = time.Hour, time.Hour
	}
	cfg.ZapLoggerBuilder = embed.NewZapLoggerBuilder(lg)

	e, err := embed.StartEtcd(cfg)
	if err != nil {
		return nil, fmt.Errorf("starting embedded etcd in %s: %w", c.Dir, err)
	}
	timeout := time.NewTimer(c.StartTimeout)
	defer timeout.Stop()
	select {
	case <-e.Server.ReadyNotify():
		return &Server{etcd: e, tls: c.TLS != nil}, nil
	case err := <-e.Err():
		e.Close()
		return nil, fmt.Errorf("embedded etcd: %w", err)
	case <-timeout.C:
		e.Close()
		return nil, fmt.Errorf("embedded etcd in %s was not ready after %s", c.Dir, c.StartTimeout)
	case <-ctx.Done():
		e.Close()
		return nil, ctx.Err()
	}
}

// Endpoints returns the client endpoints, for clientv3.Config: https://
// URLs with TLS, host:port without.
func (s *Server) Endpoints() []string {
	var addr string
	for _, l := range s.etcd.Clients {
		if l.Addr().Network() == "tcp" {
			addr = l.Addr().String()
		}
	}
	if s.tls {
		return []string{"https://" + addr}
	}
	return []string{addr}
}

// Defragment gives the free pages of etcd's database back to the file
// system, as etcd's Maintenance.Defragment does (which the in-process
// client cannot call: etcd wires its health reporting into it only for its
// gRPC service). Reads and writes wait while it runs.
func (s *Server) Defragment() error { return s.etcd.Server.Defragment() }

// Err reports a fatal etcd error after start.
func (s *Server) Err() <-chan error { return s.etcd.Err() }

// Close stops etcd and releases its data directory. In-process requests
// still running are waited for first, and later ones refused. Closing again
// does nothing.
func (s *Server) Close() {
	s.closeOnce.Do(func() {
		s.calls.close()
		s.etcd.Close()
	})
}

// Locked returns the TLS of an etcd that admits only the pool: etcd's and
// the pool's certificates, issued by ca and written under dir (see
// pki.WriteEtcdFiles). The pool's client files are in the second result.
func Locked(ca *pki.CA, dir string) (*TLS, pki.EtcdFiles, error) {
	files, err := pki.WriteEtcdFiles(ca, dir)
	if err != nil {
		return nil, pki.EtcdFiles{}, err
	}
	return &TLS{CertFile: files.ServerCert, KeyFile: files.ServerKey, TrustedCAFile: files.CA, AllowedCN: pki.PoolCommonName}, files, nil
}
