package chaos

import (
	"context"
	"fmt"
	"io"
	"net"
	"os"
	"os/exec"
	"path/filepath"
	"strings"
	"sync"
	"syscall"
	"time"

	"github.com/hivemind/taskworker"
	"github.com/hivemind/taskworker/internal/etcdserver"
	"github.com/hivemind/taskworker/internal/pool"
)

// cluster is the network under test: an etcd in this process (so that
// killing a pool never kills it), two pool processes over it, worker
// processes, and a TCP balancer in front of the pools that every client and
// worker dials, as a load balancer in front of pool replicas would be.
type cluster struct {
	cfg      Config
	etcd     *etcdserver.Server
	pools    []*process
	balancer *balancer
	workers  []*process
	token    string // admin
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
	ecfg := etcdserver.DefaultConfig(filepath.Join(cfg.Dir, "etcd"))
	ecfg.TickMs, ecfg.ElectionMs = 10, 100
	if c.etcd, err = etcdserver.Start(ctx, ecfg); err != nil {
		return nil, err
	}
	addrs := make([]string, 2)
	for i := range addrs {
		if addrs[i], err = freeAddr(); err != nil {
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
		p := &process{name: fmt.Sprintf("pool%d", i), exe: cfg.Executable, logDir: cfg.Dir, args: []string{"pool",
			"--listen", addr, "--data-dir", dir, "--etcd-endpoints", strings.Join(c.etcd.Endpoints(), ","),
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
		w := &process{name: id, exe: cfg.Executable, logDir: cfg.Dir, args: []string{"worker", "--id", id,
			"--pool", c.balancer.addr(), "--listen", "127.0.0.1:0", "--data-dir", dataDir,
			"--join-token-file", filepath.Join(cfg.Dir, "pool0", pool.JoinTokenFile), "--log-level", "debug"}}
		if err := w.start(); err != nil {
			return nil, err
		}
		c.workers = append(c.workers, w)
	}
	return c, c.waitWorkers(ctx, time.Minute)
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
	if err := c.pools[i].start(); err != nil {
		return err
	}
	// Ready once it answers with the admin token (read from its own
	// directory: on the first start it writes it).
	deadline := time.Now().Add(time.Minute)
	for {
		b, _ := os.ReadFile(filepath.Join(c.cfg.Dir, fmt.Sprintf("pool%d", i), pool.AdminTokenFile))
		if tok := strings.TrimSpace(string(b)); tok != "" {
			if cl, err := taskworker.Dial(c.balancer.backends[i], taskworker.WithToken(tok)); err == nil {
				cctx, cancel := context.WithTimeout(ctx, time.Second)
				_, err = cl.Workers(cctx)
				cancel()
				cl.Close()
				if err == nil {
					return nil
				}
			}
		}
		if c.pools[i].exited() {
			return fmt.Errorf("pool%d exited at start; see %s", i, c.pools[i].logPath())
		}
		if time.Now().After(deadline) || ctx.Err() != nil {
			return fmt.Errorf("pool%d did not serve within a minute; see %s", i, c.pools[i].logPath())
		}
		time.Sleep(50 * time.Millisecond)
	}
}

// waitWorkers waits until the pools list every worker.
func (c *cluster) waitWorkers(ctx context.Context, within time.Duration) error {
	cl, err := taskworker.Dial(c.balancer.addr(), taskworker.WithToken(c.token))
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
		w.kill()
	}
	for _, p := range c.pools {
		p.kill()
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

// process is a taskworker child process that can be killed, stopped and
// started again with the same arguments. Its output is appended to
// logDir/name.log across restarts.
type process struct {
	name, exe, logDir string
	args              []string

	mu   sync.Mutex
	cmd  *exec.Cmd
	done chan struct{}
}

func (p *process) logPath() string { return filepath.Join(p.logDir, p.name+".log") }

func (p *process) start() error {
	p.mu.Lock()
	defer p.mu.Unlock()
	log, err := os.OpenFile(p.logPath(), os.O_CREATE|os.O_WRONLY|os.O_APPEND, 0o600)
	if err != nil {
		return err
	}
	fmt.Fprintf(log, "=== %s start\n", time.Now().Format(time.RFC3339Nano))
	cmd := exec.Command(p.exe, p.args...)
	cmd.Stdout, cmd.Stderr = log, log
	cmd.SysProcAttr = &syscall.SysProcAttr{Pdeathsig: syscall.SIGKILL}
	if err := cmd.Start(); err != nil {
		log.Close()
		return fmt.Errorf("starting %s: %w", p.name, err)
	}
	done := make(chan struct{})
	go func() {
		_ = cmd.Wait()
		log.Close()
		close(done)
	}()
	p.cmd, p.done = cmd, done
	return nil
}

// signal sends sig to the running process.
func (p *process) signal(sig syscall.Signal) {
	p.mu.Lock()
	defer p.mu.Unlock()
	if p.cmd != nil {
		_ = p.cmd.Process.Signal(sig)
	}
}

// kill SIGKILLs the process and waits for it to be gone.
func (p *process) kill() {
	p.mu.Lock()
	cmd, done := p.cmd, p.done
	p.mu.Unlock()
	if cmd == nil {
		return
	}
	_ = cmd.Process.Kill()
	<-done
}

func (p *process) exited() bool {
	p.mu.Lock()
	defer p.mu.Unlock()
	select {
	case <-p.done:
		return true
	default:
		return false
	}
}

func freeAddr() (string, error) {
	l, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		return "", err
	}
	defer l.Close()
	return l.Addr().String(), nil
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
