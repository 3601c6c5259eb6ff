package e2e

import (
	"context"
	"crypto/x509"
	"net"
	"os"
	"path/filepath"
	"strings"
	"sync"
	"sync/atomic"
	"syscall"
	"testing"
	"time"

	"google.golang.org/grpc"
	"google.golang.org/grpc/codes"
	"google.golang.org/grpc/credentials"
	"google.golang.org/grpc/status"

	"github.com/hivemind/taskworker"
	v1 "github.com/hivemind/taskworker/api/taskworker/v1"
	"github.com/hivemind/taskworker/internal/pki"
)

// Stalled peers: every test asserts outcomes (the codes returned, that each
// call returned before a bound far above its deadline, that calls to other
// workers succeeded), never how fast.

// returnBound is how long after its deadline a call may take to return
// and still count as "at its deadline": generous, for a loaded machine. A
// call held by a stalled peer would not return at all.
const returnBound = 30 * time.Second

// outcome is what one call returned.
type outcome struct {
	code codes.Code
	msg  string
	took time.Duration
}

// callAll makes n concurrent calls of fn with args, each with deadline d,
// and returns what each returned.
func callAll(c *taskworker.Client, n int, fn string, args []byte, d time.Duration) []outcome {
	out := make([]outcome, n)
	var wg sync.WaitGroup
	for i := range n {
		wg.Go(func() {
			ctx, cancel := context.WithTimeout(context.Background(), d)
			defer cancel()
			start := time.Now()
			_, err := c.CallJSON(ctx, fn, args)
			st := status.Convert(err)
			out[i] = outcome{code: st.Code(), msg: st.Message(), took: time.Since(start)}
		})
	}
	wg.Wait()
	return out
}

// stalledWorker is a worker that registers with the pool and heartbeats,
// but never reads its call stream: what a worker whose call handling
// stalled looks like to the pool, with its connection alive.
type stalledWorker struct {
	v1.UnimplementedRPCServiceServer
	srv       *grpc.Server
	addr      string
	streams   atomic.Int64
	heartbeat context.CancelFunc
	stopped   chan struct{}
}

func (w *stalledWorker) CallStream(stream v1.RPCService_CallStreamServer) error {
	w.streams.Add(1)
	<-stream.Context().Done()
	return nil
}

// startStalledWorker serves function fn on a real gRPC server and keeps it
// registered until stopHeartbeat.
func startStalledWorker(t *testing.T, n *network, fn string) *stalledWorker {
	t.Helper()
	lis, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	// A small fixed window (no BDP growth): the pool's sends block after a
	// few frames.
	// It enrols as any worker does: a key, a CSR paid with the join token,
	// then mTLS with the certificate both ways.
	join, err := os.ReadFile(filepath.Join(n.dir, "join.token"))
	if err != nil {
		t.Fatal(err)
	}
	ca, err := pki.ReadCertFile(n.ca())
	if err != nil {
		t.Fatal(err)
	}
	roots := x509.NewCertPool()
	roots.AddCert(ca)
	key, err := pki.NewKey()
	if err != nil {
		t.Fatal(err)
	}
	csr, err := pki.NewCSR(key)
	if err != nil {
		t.Fatal(err)
	}
	ctx, cancel := context.WithTimeout(context.Background(), 30*time.Second)
	defer cancel()
	enrol, err := grpc.NewClient(n.poolAddr, grpc.WithTransportCredentials(credentials.NewTLS(pki.ClientConfig(pki.Verify{CA: roots, Host: pki.HostOf(n.poolAddr)}, nil))))
	if err != nil {
		t.Fatal(err)
	}
	defer enrol.Close()
	cert, err := v1.NewRegistryServiceClient(enrol).Enroll(ctx, &v1.EnrollRequest{WorkerId: "stalled", Csr: csr, JoinToken: strings.TrimSpace(string(join))})
	if err != nil {
		t.Fatal(err)
	}
	pair, err := pki.KeyPair(cert.Certificate, key)
	if err != nil {
		t.Fatal(err)
	}
	id := &pki.Holder{}
	id.Set(pair)

	w := &stalledWorker{srv: grpc.NewServer(grpc.Creds(credentials.NewTLS(pki.ServerConfig(id, roots))),
		grpc.InitialWindowSize(64<<10), grpc.InitialConnWindowSize(64<<10)),
		addr: lis.Addr().String(), stopped: make(chan struct{})}
	v1.RegisterRPCServiceServer(w.srv, w)
	go func() { _ = w.srv.Serve(lis) }()
	t.Cleanup(w.srv.Stop)

	conn, err := grpc.NewClient(n.poolAddr, grpc.WithTransportCredentials(credentials.NewTLS(pki.ClientConfig(pki.Verify{CA: roots, Host: pki.HostOf(n.poolAddr)}, id))))
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { conn.Close() })
	reg := v1.NewRegistryServiceClient(conn)
	resp, err := reg.Register(ctx, &v1.RegisterRequest{WorkerId: "stalled", Address: w.addr,
		Functions: []*v1.FunctionSpec{{Name: fn}}})
	if err != nil {
		t.Fatal(err)
	}
	hctx, stop := context.WithCancel(context.Background())
	w.heartbeat = stop
	go func() {
		defer close(w.stopped)
		tick := time.NewTicker(time.Duration(resp.HeartbeatIntervalMs) * time.Millisecond)
		defer tick.Stop()
		for {
			select {
			case <-hctx.Done():
				return
			case <-tick.C:
			}
			ctx, cancel := context.WithTimeout(hctx, 5*time.Second)
			_, _ = reg.Heartbeat(ctx, &v1.HeartbeatRequest{WorkerId: "stalled", LeaseId: resp.LeaseId})
			cancel()
		}
	}()
	t.Cleanup(w.stopHeartbeat)
	return w
}

func (w *stalledWorker) stopHeartbeat() {
	w.heartbeat()
	<-w.stopped
}

// A worker that stops reading its call stream: its callers get their own
// deadline, however many are queued behind the full flow-control window;
// calls to the other worker succeed meanwhile; once its lease lapses it is
// retired and its function is gone.
func TestWorkerNotReadingItsCallStream(t *testing.T) {
	n := startNetwork(t, 1)
	stalled := startStalledWorker(t, n, "stall")
	n.waitWorkers(2, 20*time.Second)
	c := n.client()

	// Arguments of 60 KiB each go on the stream (up to 64 KiB do) and fill
	// the stalled worker's 64 KiB window at once.
	big := []byte(`["` + strings.Repeat("x", 60<<10) + `"]`)
	const deadline = 3 * time.Second
	var stalledCalls, otherCalls []outcome
	var wg sync.WaitGroup
	wg.Go(func() { stalledCalls = callAll(c, 40, "stall", big, deadline) })
	wg.Go(func() {
		for range 10 {
			otherCalls = append(otherCalls, callAll(c, 20, "add", []byte("[1, 2]"), time.Minute)...)
		}
	})
	wg.Wait()

	for i, o := range stalledCalls {
		if o.code != codes.DeadlineExceeded || o.took > deadline+returnBound {
			t.Errorf("call %d to the stalled worker: %v %q after %s; want DeadlineExceeded at its %s deadline", i, o.code, o.msg, o.took, deadline)
		}
	}
	for i, o := range otherCalls {
		if o.code != codes.OK {
			t.Errorf("call %d to the other worker: %v %q; want OK", i, o.code, o.msg)
		}
	}
	if stalled.streams.Load() == 0 {
		t.Fatal("the pool never opened a call stream to the stalled worker: the test proved nothing")
	}

	stalled.stopHeartbeat()
	n.waitWorkers(1, 20*time.Second)
	for _, o := range callAll(c, 1, "stall", big, time.Minute) {
		if o.code != codes.NotFound {
			t.Errorf("after the stalled worker's lease lapsed, a call of its function: %v %q; want NotFound", o.code, o.msg)
		}
	}
}

// A worker SIGSTOPped mid-call: the calls on it end at their deadlines,
// calls keep succeeding on the other worker, the stopped worker leaves the
// list when its lease lapses, and after SIGCONT it joins again.
func TestWorkerStoppedMidCall(t *testing.T) {
	n := startNetwork(t, 2)
	c := n.client()
	const deadline = 3 * time.Second
	stop := make(chan struct{})
	var (
		mu             sync.Mutex
		all            []outcome
		okAfterStopped atomic.Int64
		stopped        atomic.Bool
		wg             sync.WaitGroup
	)
	for range 16 {
		wg.Go(func() {
			for {
				select {
				case <-stop:
					return
				default:
				}
				o := callAll(c, 1, "sleep", []byte("[500]"), deadline)[0]
				if o.code == codes.OK && stopped.Load() {
					okAfterStopped.Add(1)
				}
				mu.Lock()
				all = append(all, o)
				mu.Unlock()
			}
		})
	}
	time.Sleep(time.Second)
	w := n.workers[0]
	if err := w.Stop(); err != nil {
		t.Fatal(err)
	}
	stopped.Store(true)
	defer func() { _ = w.Signal(syscall.SIGCONT) }()
	n.waitWorkers(1, 30*time.Second) // the lease (2s) lapses: retired
	time.Sleep(time.Second)
	close(stop)
	wg.Wait()

	for i, o := range all {
		if (o.code != codes.OK && o.code != codes.DeadlineExceeded) || o.took > deadline+returnBound {
			t.Errorf("call %d: %v %q after %s; want OK, or DeadlineExceeded at its %s deadline", i, o.code, o.msg, o.took, deadline)
		}
	}
	if okAfterStopped.Load() == 0 {
		t.Error("no call succeeded on the other worker while one was stopped")
	}

	if err := w.Signal(syscall.SIGCONT); err != nil {
		t.Fatal(err)
	}
	n.waitWorkers(2, 30*time.Second)
	untilAllOK(t, c, "after the worker resumed")
}

// The pool SIGSTOPped with calls in flight: each caller gets its own
// deadline, not longer; a worker stopped meanwhile exits; after SIGCONT the
// network serves again by itself.
func TestPoolStoppedMidCall(t *testing.T) {
	n := startNetwork(t, 2)
	c := n.client()
	const deadline = 3 * time.Second
	var inFlight []outcome
	done := make(chan struct{})
	go func() {
		defer close(done)
		inFlight = callAll(c, 20, "sleep", []byte("[1000]"), deadline)
	}()
	time.Sleep(200 * time.Millisecond)
	if err := n.pool.Stop(); err != nil {
		t.Fatal(err)
	}
	defer func() { _ = n.pool.Signal(syscall.SIGCONT) }()
	later := callAll(c, 20, "add", []byte("[1, 2]"), deadline)
	<-done
	for i, o := range append(inFlight, later...) {
		if (o.code != codes.OK && o.code != codes.DeadlineExceeded) || o.took > deadline+returnBound {
			t.Errorf("call %d: %v %q after %s; want OK, or DeadlineExceeded at its %s deadline", i, o.code, o.msg, o.took, deadline)
		}
	}
	for i, o := range later {
		if o.code != codes.DeadlineExceeded {
			t.Errorf("call %d made while the pool was stopped: %v %q; want DeadlineExceeded", i, o.code, o.msg)
		}
	}

	// A worker told to stop while its pool is stopped still stops: its
	// replies to the pool cannot hold it (its own stop gives its calls 30 s;
	// it must not need them).
	w := n.workers[1]
	if err := w.Signal(syscall.SIGTERM); err != nil {
		t.Fatal(err)
	}
	select {
	case <-w.Done():
	case <-time.After(25 * time.Second):
		t.Error("a worker told to stop while the pool is stopped still runs after 25s")
	}

	if err := n.pool.Signal(syscall.SIGCONT); err != nil {
		t.Fatal(err)
	}
	untilAllOK(t, c, "after the pool resumed")
}

// untilAllOK waits until 20 concurrent calls all succeed: the network
// serves again (workers whose leases lapsed register anew on their own).
func untilAllOK(t *testing.T, c *taskworker.Client, when string) {
	t.Helper()
	give := time.Now().Add(60 * time.Second)
	for {
		var failed []outcome
		for _, o := range callAll(c, 20, "add", []byte("[1, 2]"), 10*time.Second) {
			if o.code != codes.OK {
				failed = append(failed, o)
			}
		}
		if len(failed) == 0 {
			return
		}
		if time.Now().After(give) {
			t.Fatalf("%s, calls still fail after a minute: %d of 20, first %v %q", when, len(failed), failed[0].code, failed[0].msg)
		}
		time.Sleep(200 * time.Millisecond)
	}
}
