package chaos

import (
	"cmp"
	"context"
	"fmt"
	"google.golang.org/grpc"
	"io"
	"net"
	"os"
	"path/filepath"
	"strings"
	"sync"
	"syscall"
	"time"

	"github.com/hivemind/taskworker"
	"github.com/hivemind/taskworker/internal/etcdserver"
	"github.com/hivemind/taskworker/internal/keyring"
	"github.com/hivemind/taskworker/internal/pki"
	"github.com/hivemind/taskworker/internal/pool"
	"github.com/hivemind/taskworker/internal/proctest"
)

// cluster is the network under test: an etcd in this process (so that
// killing a pool never kills it), two pool processes over it (or
// Config.Pools), worker processes, and a TCP balancer in front of the pools
// that every client and worker dials, as a load balancer in front of pool
// replicas would be.
type cluster struct {
	cfg      Config
	etcd     *etcdserver.Server
	pools    []*proctest.Process
	balancer *balancer
	workers  []*proctest.Process
	token    string // admin
	// ca is the network's CA: the pools share it (--ca-cert, --ca-key), as
	// replicas must, and it signs etcd's certificates.
	ca      string
	etcdTLS pki.EtcdFiles
	// disk is the tmpfs that worker 0's data directory is on, "" when none
	// could be mounted.
	disk string
}

func startCluster(ctx context.Context, cfg Config) (_ *cluster, err error) {
	c := &cluster{cfg: cfg}
	defer func() {
		if err != nil {
			c.stop()
		}
	}()
	caDir := filepath.Join(cfg.Dir, "ca")
	ca, err := pki.LoadOrCreateCA(caDir)
	if err != nil {
		return nil, err
	}
	c.ca = filepath.Join(caDir, pki.CACertFile)
	ecfg := etcdserver.DefaultConfig(filepath.Join(cfg.Dir, "etcd"))
	ecfg.TickMs, ecfg.ElectionMs = 10, 100
	if ecfg.TLS, c.etcdTLS, err = etcdserver.Locked(ca, filepath.Join(cfg.Dir, "etcd-tls")); err != nil {
		return nil, err
	}
	if c.etcd, err = etcdserver.Start(ctx, ecfg); err != nil {
		return nil, err
	}
	addrs := make([]string, cmp.Or(cfg.Pools, 2))
	for i := range addrs {
		if addrs[i], err = proctest.FreeAddr(); err != nil {
			return nil, err
		}
	}
	if c.balancer, err = newBalancer(addrs); err != nil {
		return nil, err
	}
	for i, addr := range addrs {
		dir := filepath.Join(cfg.Dir, fmt.Sprintf("pool%d", i))
		if err := os.MkdirAll(dir, 0o700); err != nil {
			return nil, err
		}
		if i > 0 { // replicas share the bootstrap tokens
			for _, f := range []string{pool.AdminTokenFile, pool.JoinTokenFile} {
				b, err := os.ReadFile(filepath.Join(cfg.Dir, "pool0", f))
				if err != nil {
					return nil, err
				}
				if err := os.WriteFile(filepath.Join(dir, f), b, 0o600); err != nil {
					return nil, err
				}
			}
		}
		p := &proctest.Process{Name: fmt.Sprintf("pool%d", i), Exe: cfg.Executable, Log: dir + ".log", Args: []string{"pool",
			"--listen", addr, "--data-dir", dir, "--etcd-endpoints", strings.Join(c.etcd.Endpoints(), ","),
			"--etcd-ca", c.etcdTLS.CA, "--etcd-cert", c.etcdTLS.ClientCert, "--etcd-key", c.etcdTLS.ClientKey,
			"--ca-cert", c.ca, "--ca-key", filepath.Join(caDir, pki.CAKeyFile),
			// Replicas share the master keys, as they share the CA.
			"--key-file", filepath.Join(caDir, keyring.FileName),
			"--lease-ttl", cfg.LeaseTTL.String(), "--repair-grace", "1s", "--block-size", "65536",
			"--gc-min-age", "30s", "--log-level", "debug"}}
		c.pools = append(c.pools, p)
		if err := c.startPool(ctx, i); err != nil {
			return nil, err
		}
		if i == 0 {
			b, err := os.ReadFile(filepath.Join(dir, pool.AdminTokenFile))
			if err != nil {
				return nil, err
			}
			c.token = strings.TrimSpace(string(b))
		}
	}
	c.disk = c.mountDisk()
	for i := range cfg.Workers {
		id := fmt.Sprintf("worker_%03d", i+1)
		dataDir := filepath.Join(cfg.Dir, "workers", id)
		if i == 0 && c.disk != "" {
			dataDir = filepath.Join(c.disk, "data")
		}
		w := &proctest.Process{Name: id, Exe: cfg.Executable, Log: filepath.Join(cfg.Dir, id+".log"), Args: []string{"worker", "--id", id,
			"--pool", c.balancer.addr(), "--listen", "127.0.0.1:0", "--data-dir", dataDir,
			"--join-token-file", filepath.Join(cfg.Dir, "pool0", pool.JoinTokenFile), "--ca", c.ca, "--log-level", "debug"}}
		if err := w.Start(); err != nil {
			return nil, err
		}
		c.workers = append(c.workers, w)
	}
	return c, c.waitWorkers(ctx, time.Minute)
}

// dial returns a client of the pools, through the balancer, with token.
func (c *cluster) dial(token string) (*taskworker.Client, error) {
	// Calls wait for a connection rather than fail at once while a pool is
	// down: a call that fails before it is sent would only be one more
	// ambiguous write for the check to carry.
	return taskworker.Dial(c.balancer.addr(), taskworker.WithToken(token), taskworker.WithCAFile(c.ca),
		taskworker.WithDialOptions(grpc.WithDefaultCallOptions(grpc.WaitForReady(true))))
}

// mountDisk mounts a small tmpfs for worker 0's data, so that the disk-full
// fault can fill it. It needs root; without it the fault is skipped.
func (c *cluster) mountDisk() string {
	if !c.cfg.faultEnabled(FaultFillDisk) {
		return ""
	}
	dir := filepath.Join(c.cfg.Dir, "disk")
	if err := os.MkdirAll(dir, 0o700); err != nil {
		c.cfg.logf("fault %s skipped: %v", FaultFillDisk, err)
		return ""
	}
	if os.Geteuid() != 0 {
		c.cfg.logf("fault %s skipped: mounting a small tmpfs to fill needs root", FaultFillDisk)
		return ""
	}
	if err := syscall.Mount("tmpfs", dir, "tmpfs", 0, "size=32m,mode=0700"); err != nil {
		c.cfg.logf("fault %s skipped: mounting a tmpfs on %s: %v", FaultFillDisk, dir, err)
		return ""
	}
	return dir
}

func (c *cluster) startPool(ctx context.Context, i int) error {
	p := c.pools[i]
	if err := p.Start(); err != nil {
		return err
	}
	ctx, cancel := context.WithTimeout(ctx, time.Minute)
	defer cancel()
	_, err := proctest.WaitPool(ctx, p, c.balancer.backends[i], filepath.Join(c.cfg.Dir, p.Name, pool.AdminTokenFile), c.ca)
	if err != nil {
		return fmt.Errorf("%w; see %s", err, p.Log)
	}
	return nil
}

// waitWorkers waits until the pools list every worker.
func (c *cluster) waitWorkers(ctx context.Context, within time.Duration) error {
	cl, err := c.dial(c.token)
	if err != nil {
		return err
	}
	defer cl.Close()
	deadline := time.Now().Add(within)
	got := 0
	for {
		cctx, cancel := context.WithTimeout(ctx, 2*time.Second)
		ws, err := cl.Workers(cctx)
		cancel()
		if got = len(ws); err == nil && got == len(c.workers) {
			return nil
		}
		if time.Now().After(deadline) || ctx.Err() != nil {
			return fmt.Errorf("%d of %d workers registered within %s; see the logs in %s", got, len(c.workers), within, c.cfg.Dir)
		}
		time.Sleep(100 * time.Millisecond)
	}
}

// stop kills everything and unmounts the tmpfs.
func (c *cluster) stop() {
	for _, w := range c.workers {
		w.Kill()
	}
	for _, p := range c.pools {
		p.Kill()
	}
	if c.balancer != nil {
		c.balancer.close()
	}
	if c.etcd != nil {
		c.etcd.Close()
	}
	if c.disk != "" {
		_ = syscall.Unmount(c.disk, 0)
	}
}

// balancer forwards each TCP connection to the first pool, in turn, that
// accepts it: what a TCP load balancer in front of pool replicas does. A
// pool's death breaks the connections through it; the next ones go to the
// other pool.
type balancer struct {
	l        net.Listener
	backends []string

	mu    sync.Mutex
	next  int
	conns map[net.Conn]bool
	wg    sync.WaitGroup
}

func newBalancer(backends []string) (*balancer, error) {
	l, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		return nil, err
	}
	b := &balancer{l: l, backends: backends, conns: map[net.Conn]bool{}}
	b.wg.Go(b.serve)
	return b, nil
}

func (b *balancer) addr() string { return b.l.Addr().String() }

func (b *balancer) serve() {
	for {
		c, err := b.l.Accept()
		if err != nil {
			return
		}
		b.wg.Go(func() { b.forward(c) })
	}
}

func (b *balancer) track(c net.Conn) bool {
	b.mu.Lock()
	defer b.mu.Unlock()
	if b.conns == nil { // closed
		return false
	}
	b.conns[c] = true
	return true
}

func (b *balancer) forward(c net.Conn) {
	defer c.Close()
	if !b.track(c) {
		return
	}
	b.mu.Lock()
	first := b.next
	b.next++
	b.mu.Unlock()
	var up net.Conn
	for i := range b.backends {
		var err error
		if up, err = net.DialTimeout("tcp", b.backends[(first+i)%len(b.backends)], time.Second); err == nil {
			break
		}
	}
	if up == nil || !b.track(up) {
		return
	}
	defer up.Close()
	done := make(chan struct{}, 2)
	pipe := func(dst, src net.Conn) {
		_, _ = io.Copy(dst, src)
		done <- struct{}{}
	}
	go pipe(up, c)
	go pipe(c, up)
	<-done // either side gone: drop both, as a balancer does
	b.mu.Lock()
	if b.conns != nil {
		delete(b.conns, c)
		delete(b.conns, up)
	}
	b.mu.Unlock()
	c.Close()
	up.Close()
	<-done
}

func (b *balancer) close() {
	b.l.Close()
	b.mu.Lock()
	for c := range b.conns {
		c.Close()
	}
	b.conns = nil
	b.mu.Unlock()
	b.wg.Wait()
}
