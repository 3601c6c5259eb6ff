package e2e

import (
	"bytes"
	"context"
	"crypto/tls"
	"fmt"
	"os"
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
	ec := startEtcdCluster(t)
	n := ec.startNetwork(3)
	ctx, cancel := context.WithTimeout(context.Background(), 60*time.Second)
	defer cancel()
	net, clients, members, startMember := ec.net, ec.clients, ec.members, ec.startMember

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

// etcdCluster is three `taskworker etcd` members with the material of
// `taskworker init`.
type etcdCluster struct {
	t       *testing.T
	dir     string
	net     string // init's directory
	clients []string
	peers   []string // NAME=URL
	members []*proctest.Process
	// dataDirs are the members' data directories.
	dataDirs []string
}

func startEtcdCluster(t *testing.T) *etcdCluster {
	dir := t.TempDir()
	ec := &etcdCluster{t: t, dir: dir, net: filepath.Join(dir, "net"), members: make([]*proctest.Process, 3)}
	if out, err := runCLI(t, nil, "init", "--dir", ec.net, "--etcd", "etcd1=127.0.0.1", "--etcd", "etcd2=127.0.0.1", "--etcd", "etcd3=127.0.0.1"); err != nil {
		t.Fatalf("init: %v\n%s", err, out)
	}
	for i := range 3 {
		ec.clients = append(ec.clients, "https://"+freeAddr(t))
		ec.peers = append(ec.peers, fmt.Sprintf("etcd%d=https://%s", i+1, freeAddr(t)))
		ec.dataDirs = append(ec.dataDirs, filepath.Join(dir, fmt.Sprintf("etcd%d", i+1)))
	}
	for i := range 3 {
		ec.startMember(i)
	}
	return ec
}

func (ec *etcdCluster) peerURL(i int) string {
	return strings.TrimPrefix(ec.peers[i], fmt.Sprintf("etcd%d=", i+1))
}

func (ec *etcdCluster) startMember(i int) {
	name := fmt.Sprintf("etcd%d", i+1)
	ec.members[i] = start(ec.t, name, nil, "etcd", "--name", name, "--data-dir", ec.dataDirs[i],
		"--listen-client", ec.clients[i], "--advertise-client", ec.clients[i], "--listen-peer", ec.peerURL(i), "--advertise-peer", ec.peerURL(i),
		"--initial-cluster", strings.Join(ec.peers, ","), "--heartbeat-ms", "50", "--election-ms", "500",
		"--cert", filepath.Join(ec.net, "etcd", name+".crt"), "--key", filepath.Join(ec.net, "etcd", name+".key"),
		"--ca", filepath.Join(ec.net, "etcd", "ca.crt"))
}

// clientFlags are the flags that reach the cluster with the pools' etcd
// certificate.
func (ec *etcdCluster) clientFlags() []string {
	return []string{"--ca", filepath.Join(ec.net, "etcd", "ca.crt"),
		"--cert", filepath.Join(ec.net, "etcd", "pool.crt"), "--key", filepath.Join(ec.net, "etcd", "pool.key")}
}

// startNetwork starts a pool on the cluster and workers.
func (ec *etcdCluster) startNetwork(workers int) *network {
	t := ec.t
	n := &network{t: t, dir: filepath.Join(ec.dir, "pool"), poolAddr: freeAddr(t), caFile: filepath.Join(ec.net, pki.CACertFile)}
	ec.startPool(n)
	for i := range workers {
		n.workers = append(n.workers, n.startWorker(fmt.Sprintf("worker_%03d", i+1)))
	}
	n.waitWorkers(workers, 30*time.Second)
	return n
}

func (ec *etcdCluster) startPool(n *network) {
	n.pool = ec.startReplica("pool", n.dir, n.poolAddr)
	n.token = ec.waitReplica(n.pool, n.dir, n.poolAddr)
}

// startReplica starts a pool on the cluster, with the network's CA and
// master keys from init, as every replica of a network is started; extra
// are more flags.
func (ec *etcdCluster) startReplica(name, dir, addr string, extra ...string) *proctest.Process {
	return start(ec.t, name, nil, append([]string{"pool", "--listen", addr, "--data-dir", dir, "--lease-ttl", "2s",
		"--etcd-endpoints", strings.Join(ec.clients, ","), "--etcd-ca", filepath.Join(ec.net, "etcd", "ca.crt"),
		"--etcd-cert", filepath.Join(ec.net, "etcd", "pool.crt"), "--etcd-key", filepath.Join(ec.net, "etcd", "pool.key"),
		"--ca-cert", filepath.Join(ec.net, pki.CACertFile), "--ca-key", filepath.Join(ec.net, pki.CAKeyFile),
		"--key-file", filepath.Join(ec.net, "master.keys")}, extra...)...)
}

// waitReplica waits until the pool p started by startReplica serves, and
// returns its admin token.
func (ec *etcdCluster) waitReplica(p *proctest.Process, dir, addr string) string {
	ctx, cancel := context.WithTimeout(context.Background(), 60*time.Second)
	defer cancel()
	token, err := proctest.WaitPool(ctx, p, addr, filepath.Join(dir, "admin.token"), filepath.Join(ec.net, pki.CACertFile))
	if err != nil {
		ec.t.Fatalf("the pool did not come up on the etcd cluster: %v", err)
	}
	return token
}

// The backup and restore of docs/OPERATIONS.md, with the built binary: a
// snapshot of a running cluster; every member and the pool lost with their
// data directories; members restored from the snapshot into new ones; then
// every file of the snapshot reads back byte for byte, from the shards the
// workers kept, and the network takes new calls and files.
func TestEtcdBackupAndRestore(t *testing.T) {
	ec := startEtcdCluster(t)
	n := ec.startNetwork(3)
	ctx, cancel := context.WithTimeout(context.Background(), 2*time.Minute)
	defer cancel()
	c := n.client()
	files := map[string][]byte{}
	for i, size := range []int{0, 100, 64 << 10, 3 << 20} {
		data := randomBytes(size)
		info, err := c.Push(ctx, fmt.Sprintf("backup-%d.bin", i), data)
		if err != nil {
			t.Fatal(err)
		}
		files[info.FileId] = data
	}
	snap := filepath.Join(ec.dir, "etcd.db")
	if out, err := runCLI(t, nil, append([]string{"etcd", "snapshot", "save", snap, "--endpoints", ec.clients[1]}, ec.clientFlags()...)...); err != nil {
		t.Fatalf("snapshot save: %v\n%s", err, out)
	}

	// Lose the control plane: the pool, every member, their data.
	n.pool.Kill()
	for i, m := range ec.members {
		m.Kill()
		if err := os.Rename(ec.dataDirs[i], ec.dataDirs[i]+".lost"); err != nil {
			t.Fatal(err)
		}
	}
	// A restore refuses to overwrite a directory.
	if out, err := runCLI(t, nil, "etcd", "snapshot", "restore", snap, "--name", "etcd1", "--data-dir", ec.dataDirs[0]+".lost",
		"--initial-cluster", strings.Join(ec.peers, ","), "--advertise-peer", ec.peerURL(0)); err == nil || !strings.Contains(out, "exists") {
		t.Fatalf("restore into an existing directory: %v\n%s", err, out)
	}
	for i := range ec.members {
		if out, err := runCLI(t, nil, "etcd", "snapshot", "restore", snap, "--name", fmt.Sprintf("etcd%d", i+1), "--data-dir", ec.dataDirs[i],
			"--initial-cluster", strings.Join(ec.peers, ","), "--advertise-peer", ec.peerURL(i)); err != nil {
			t.Fatalf("restore member %d: %v\n%s", i+1, err, out)
		}
	}
	for i := range ec.members {
		ec.startMember(i)
	}
	ec.startPool(n)
	n.waitWorkers(3, 30*time.Second)
	c = n.client()
	for id, want := range files {
		got, err := c.Get(ctx, id)
		if err != nil || !bytes.Equal(got, want) {
			t.Fatalf("file %s after the restore: %d bytes (want %d), %v", id, len(got), len(want), err)
		}
	}
	if out, err := n.cli("call", "add", "1", "2"); err != nil || strings.TrimSpace(out) != "3" {
		t.Fatalf("call after the restore: %q, %v", out, err)
	}
	if _, err := c.Push(ctx, "after.txt", []byte("after the restore")); err != nil {
		t.Fatalf("push after the restore: %v", err)
	}
}
