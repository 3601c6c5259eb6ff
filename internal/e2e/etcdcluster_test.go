package e2e

import (
	"context"
	"crypto/tls"
	"fmt"
	"path/filepath"
	"strings"
	"testing"
	"time"

	clientv3 "go.etcd.io/etcd/client/v3"
	"go.uber.org/zap"

	"github.com/hivemind/taskworker/internal/pki"
	"github.com/hivemind/taskworker/internal/proctest"
)

// A network on a three-member etcd cluster, every part a process of the
// built binary, with its material from `taskworker init`: calls and files
// go on when a member is lost, and only the pools' certificate opens etcd
// (not a worker's, which the network's CA signed).
func TestNetworkOnAThreeMemberEtcd(t *testing.T) {
	dir := t.TempDir()
	net := filepath.Join(dir, "net")
	if out, err := runCLI(t, nil, "init", "--dir", net, "--etcd", "etcd1=127.0.0.1", "--etcd", "etcd2=127.0.0.1", "--etcd", "etcd3=127.0.0.1"); err != nil {
		t.Fatalf("init: %v\n%s", err, out)
	}
	var peers, clients []string
	for i := range 3 {
		clients = append(clients, "https://"+freeAddr(t))
		peers = append(peers, fmt.Sprintf("etcd%d=https://%s", i+1, freeAddr(t)))
	}
	members := make([]*proctest.Process, 3)
	startMember := func(i int) {
		name := fmt.Sprintf("etcd%d", i+1)
		peer := strings.TrimPrefix(peers[i], name+"=")
		members[i] = start(t, name, nil, "etcd", "--name", name, "--data-dir", filepath.Join(dir, name),
			"--listen-client", clients[i], "--advertise-client", clients[i], "--listen-peer", peer, "--advertise-peer", peer,
			"--initial-cluster", strings.Join(peers, ","), "--heartbeat-ms", "50", "--election-ms", "500",
			"--cert", filepath.Join(net, "etcd", name+".crt"), "--key", filepath.Join(net, "etcd", name+".key"),
			"--ca", filepath.Join(net, "etcd", "ca.crt"))
	}
	for i := range 3 {
		startMember(i)
	}

	n := &network{t: t, dir: filepath.Join(dir, "pool"), poolAddr: freeAddr(t), caFile: filepath.Join(net, pki.CACertFile)}
	n.pool = start(t, "pool", nil, "pool", "--listen", n.poolAddr, "--data-dir", n.dir, "--lease-ttl", "2s",
		"--etcd-endpoints", strings.Join(clients, ","), "--etcd-ca", filepath.Join(net, "etcd", "ca.crt"),
		"--etcd-cert", filepath.Join(net, "etcd", "pool.crt"), "--etcd-key", filepath.Join(net, "etcd", "pool.key"),
		"--ca-cert", n.caFile, "--ca-key", filepath.Join(net, pki.CAKeyFile), "--key-file", filepath.Join(net, "master.keys"))
	ctx, cancel := context.WithTimeout(context.Background(), 60*time.Second)
	defer cancel()
	var err error
	if n.token, err = proctest.WaitPool(ctx, n.pool, n.poolAddr, filepath.Join(n.dir, "admin.token"), n.caFile); err != nil {
		t.Fatalf("the pool did not come up on the etcd cluster: %v", err)
	}
	for i := range 3 {
		n.workers = append(n.workers, n.startWorker(fmt.Sprintf("worker_%03d", i+1)))
	}
	n.waitWorkers(3, 30*time.Second)

	c := n.client()
	data := []byte(strings.Repeat("three members ", 10_000))
	info, err := c.Push(ctx, "cluster.txt", data)
	if err != nil {
		t.Fatal(err)
	}
	check := func(when string) {
		t.Helper()
		if out, err := n.cli("call", "add", "1", "2"); err != nil || strings.TrimSpace(out) != "3" {
			t.Fatalf("%s: call add 1 2: %q, %v", when, out, err)
		}
		got, err := c.Get(ctx, info.FileId)
		if err != nil || string(got) != string(data) {
			t.Fatalf("%s: get: %d bytes, %v", when, len(got), err)
		}
		if _, err := c.Push(ctx, "more.txt", []byte(when)); err != nil {
			t.Fatalf("%s: push: %v", when, err)
		}
	}
	check("three members")
	members[1].Kill()
	check("one member lost")
	startMember(1)
	members[0].Kill()
	check("the first member lost after the second came back")

	// etcd admits the pools' certificate only: a worker's, signed by the
	// network's CA, and no certificate at all are refused.
	poolCert, err := tls.LoadX509KeyPair(filepath.Join(net, "etcd", "pool.crt"), filepath.Join(net, "etcd", "pool.key"))
	if err != nil {
		t.Fatal(err)
	}
	for _, tc := range []struct {
		name   string
		cert   []tls.Certificate
		wantOK bool
	}{
		{"the pools' certificate", []tls.Certificate{poolCert}, true},
		{"no certificate", nil, false},
		{"a worker's certificate", workerCerts(t, n), false},
	} {
		cfg, err := pki.EtcdClientConfig(filepath.Join(net, "etcd", "ca.crt"), filepath.Join(net, "etcd", "pool.crt"), filepath.Join(net, "etcd", "pool.key"))
		if err != nil {
			t.Fatal(err)
		}
		cfg.Certificates = tc.cert
		cli, err := clientv3.New(clientv3.Config{Endpoints: clients[1:], TLS: cfg, DialTimeout: 3 * time.Second, Logger: zap.NewNop()})
		if err == nil {
			gctx, gcancel := context.WithTimeout(ctx, 5*time.Second)
			_, err = cli.Get(gctx, "/", clientv3.WithPrefix(), clientv3.WithCountOnly())
			gcancel()
			cli.Close()
		}
		if (err == nil) != tc.wantOK {
			t.Errorf("etcd with %s: %v, want success %v", tc.name, err, tc.wantOK)
		}
	}
}

// workerCerts returns a worker's own certificate and key, as a worker's
// operator holds them.
func workerCerts(t *testing.T, n *network) []tls.Certificate {
	t.Helper()
	dir := filepath.Join(n.dir, "workers", "worker_001", "identity")
	c, err := tls.LoadX509KeyPair(filepath.Join(dir, "worker.crt"), filepath.Join(dir, "worker.key"))
	if err == nil {
		return []tls.Certificate{c}
	}
	t.Fatalf("worker_001's certificate: %v", err)
	return nil
}
