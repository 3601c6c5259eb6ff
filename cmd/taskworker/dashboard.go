package main

import (
	"context"
	"crypto/tls"
	"crypto/x509"
	"errors"
	"fmt"
	"log/slog"
	"net"
	"net/http"
	"time"

	"github.com/prometheus/client_golang/prometheus"
	"github.com/spf13/pflag"
	"google.golang.org/grpc"
	"google.golang.org/grpc/credentials"
	"google.golang.org/grpc/credentials/insecure"

	"github.com/hivemind/taskworker/internal/dashboard"
	"github.com/hivemind/taskworker/internal/pki"
)

// httpFlags are the dashboard's listener flags, shared by pool and up.
type httpFlags struct {
	listen, cert, key string
}

// dashboardSite is a dashboard being served.
type dashboardSite struct {
	url  string
	srv  *http.Server
	conn *grpc.ClientConn
}

// serveDashboard serves the dashboard of the pool at poolAddr on h.listen
// until ctx ends. The page's tokens go to the pool over TLS with the CA in
// caFile (plaintext when caFile is ""). On an address other than loopback it
// serves HTTPS only, with h.cert and h.key: tokens cross it.
func serveDashboard(ctx context.Context, h httpFlags, poolAddr, caFile string, g prometheus.Gatherer, log *slog.Logger) (*dashboardSite, error) {
	ln, err := net.Listen("tcp", h.listen)
	if err != nil {
		return nil, fmt.Errorf("--http-listen: %w", err)
	}
	tcp, _ := ln.Addr().(*net.TCPAddr)
	secure := h.cert != "" || h.key != ""
	if !secure && (tcp == nil || !tcp.IP.IsLoopback()) {
		ln.Close()
		return nil, errors.New("--http-listen on an address other than loopback needs --http-cert and --http-key: the dashboard's tokens must not cross a network in the clear")
	}
	var tlsConf *tls.Config
	if secure {
		cert, err := tls.LoadX509KeyPair(h.cert, h.key)
		if err != nil {
			ln.Close()
			return nil, fmt.Errorf("--http-cert/--http-key: %w", err)
		}
		tlsConf = &tls.Config{Certificates: []tls.Certificate{cert}, MinVersion: tls.VersionTLS12}
	}
	creds := insecure.NewCredentials()
	if caFile != "" {
		ca, err := pki.ReadCertFile(caFile)
		if err != nil {
			ln.Close()
			return nil, err
		}
		roots := x509.NewCertPool()
		roots.AddCert(ca)
		creds = credentials.NewTLS(&tls.Config{RootCAs: roots, MinVersion: tls.VersionTLS13})
	}
	conn, err := grpc.NewClient(poolAddr, grpc.WithTransportCredentials(creds))
	if err != nil {
		ln.Close()
		return nil, err
	}
	d := dashboard.New(dashboard.Config{Conn: conn, Gatherer: g, Logger: log})
	go d.Run(ctx)
	srv := &http.Server{Handler: d, TLSConfig: tlsConf, ReadHeaderTimeout: 10 * time.Second}
	go func() {
		var err error
		if secure {
			err = srv.ServeTLS(ln, "", "")
		} else {
			err = srv.Serve(ln)
		}
		if err != nil && !errors.Is(err, http.ErrServerClosed) {
			log.Error("dashboard stopped", "err", err)
		}
	}()
	go func() {
		<-ctx.Done()
		sctx, cancel := context.WithTimeout(context.Background(), 5*time.Second)
		defer cancel()
		_ = srv.Shutdown(sctx)
		conn.Close()
	}()
	scheme := "http"
	if secure {
		scheme = "https"
	}
	return &dashboardSite{url: scheme + "://" + ln.Addr().String() + "/", srv: srv, conn: conn}, nil
}

func (h *httpFlags) register(f *pflag.FlagSet, listenDefault string) {
	f.StringVar(&h.listen, "http-listen", listenDefault, "serve the live dashboard here (loopback, or HTTPS with --http-cert and --http-key; \"\" for none)")
	f.StringVar(&h.cert, "http-cert", "", "certificate for the dashboard's HTTPS")
	f.StringVar(&h.key, "http-key", "", "key of --http-cert")
}

// dialable is addr with an unspecified host (0.0.0.0, ::) replaced by
// loopback, for a client in the same process.
func dialable(addr string) string {
	host, port, err := net.SplitHostPort(addr)
	if err != nil {
		return addr
	}
	if ip := net.ParseIP(host); ip == nil || ip.IsUnspecified() {
		return net.JoinHostPort("127.0.0.1", port)
	}
	return addr
}
