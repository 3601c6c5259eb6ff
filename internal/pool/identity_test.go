package pool_test

import (
	"context"
	"net"
	"strings"
	"sync/atomic"
	"testing"
	"time"

	"google.golang.org/grpc"
	"google.golang.org/grpc/codes"
	"google.golang.org/grpc/credentials"
	"google.golang.org/grpc/status"

	"github.com/hivemind/taskworker"
	v1 "github.com/hivemind/taskworker/api/taskworker/v1"
	"github.com/hivemind/taskworker/internal/cluster"
	"github.com/hivemind/taskworker/internal/examples"
	"github.com/hivemind/taskworker/internal/pki"
	"github.com/hivemind/taskworker/internal/worker"
)

func wantStatus(t *testing.T, what string, err error, code codes.Code, msg string) {
	t.Helper()
	if st := status.Convert(err); st.Code() != code || !strings.Contains(st.Message(), msg) {
		t.Errorf("%s: %v; want %s containing %q", what, err, code, msg)
	}
}

// A fake worker holding the join token cannot take a live worker's id: a
// second enrolment of the id is refused, and with a certificate of its own
// it cannot register, heartbeat, deregister or report damage for another
// id. The real worker keeps its registration and its calls.
func TestFakeWorkerCannotTakeAnotherID(t *testing.T) {
	c := cluster.New(t, cluster.Options{Workers: 2})
	ctx := ctxTimeout(t, 30*time.Second)
	_, err := c.EnrollWorker(0, "worker_001")
	wantStatus(t, "enrolling a live worker's id again", err, codes.AlreadyExists, "enrolled with another key")

	fake, err := c.EnrollWorker(0, "fake")
	if err != nil {
		t.Fatal(err)
	}
	reg := v1.NewRegistryServiceClient(fake)
	_, err = reg.Register(ctx, &v1.RegisterRequest{WorkerId: "worker_001", Address: "127.0.0.1:1", Functions: []*v1.FunctionSpec{{Name: "add"}}, StoresFiles: true})
	wantStatus(t, "registering as another worker", err, codes.PermissionDenied, "a worker acts only for itself")
	_, err = reg.Heartbeat(ctx, &v1.HeartbeatRequest{WorkerId: "worker_001", LeaseId: 1})
	wantStatus(t, "heartbeating as another worker", err, codes.PermissionDenied, "a worker acts only for itself")
	_, err = reg.Deregister(ctx, &v1.DeregisterRequest{WorkerId: "worker_001", LeaseId: 1})
	wantStatus(t, "deregistering another worker", err, codes.PermissionDenied, "a worker acts only for itself")
	_, err = reg.ReportDamage(ctx, &v1.ReportDamageRequest{WorkerId: "worker_001"})
	wantStatus(t, "reporting damage as another worker", err, codes.PermissionDenied, "a worker acts only for itself")

	workers, err := c.Client(0).Workers(ctx)
	if err != nil {
		t.Fatal(err)
	}
	for _, w := range workers {
		if w.WorkerId == "worker_001" && w.Address != c.Workers[0].Addr() {
			t.Errorf("worker_001 now points at %s, not the real worker's %s", w.Address, c.Workers[0].Addr())
		}
	}
	for range 20 {
		if _, err := c.Client(0).Call(ctx, "add", 1, 2); err != nil {
			t.Fatalf("calls after the attempts: %v", err)
		}
	}
}

// Without a certificate of the network nothing registers: not the join
// token, not the admin token, not a certificate from another CA.
func TestRegistrationNeedsACertificate(t *testing.T) {
	c := cluster.New(t, cluster.Options{Workers: 1})
	ctx := ctxTimeout(t, 30*time.Second)
	req := &v1.RegisterRequest{WorkerId: "intruder", Address: "127.0.0.1:1", StoresFiles: true}
	for name, token := range map[string]string{"join token": c.JoinToken, "admin token": c.AdminToken} {
		_, err := v1.NewRegistryServiceClient(c.ClientWithToken(0, token).Conn()).Register(ctx, req)
		wantStatus(t, "registering with the "+name, err, codes.Unauthenticated, "a worker enrols first")
	}
	stranger, err := pki.NewCA()
	if err != nil {
		t.Fatal(err)
	}
	cert, err := stranger.IssueKeyPair(pki.Leaf{URIs: []string{pki.WorkerURI(c.Pools[0].ClusterID(), "intruder")}, Client: true, TTL: time.Hour})
	if err != nil {
		t.Fatal(err)
	}
	h := &pki.Holder{}
	h.Set(cert)
	conn, err := grpc.NewClient(c.PoolAddr(0), grpc.WithTransportCredentials(credentials.NewTLS(
		pki.ClientConfig(pki.Verify{CA: c.CA.Pool(), Host: "127.0.0.1"}, h))))
	if err != nil {
		t.Fatal(err)
	}
	defer conn.Close()
	if _, err := v1.NewRegistryServiceClient(conn).Register(ctx, req); status.Code(err) != codes.Unavailable {
		t.Errorf("registering with a self-made CA's certificate: %v; want the handshake refused", err)
	}
	if ids := c.Pools[0].WorkerIDs(); len(ids) != 1 {
		t.Errorf("the pool lists %v", ids)
	}
}

// A worker that is not certified receives no shard: it cannot register, so
// it is never a storage worker. Its listener sees no connection while a
// file is pushed.
func TestUncertifiedWorkerGetsNoShards(t *testing.T) {
	c := cluster.New(t, cluster.Options{Workers: 3})
	ctx := ctxTimeout(t, time.Minute)
	lis, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	defer lis.Close()
	var accepted atomic.Int32
	go func() {
		for {
			conn, err := lis.Accept()
			if err != nil {
				return
			}
			accepted.Add(1)
			conn.Close()
		}
	}()
	_, err = v1.NewRegistryServiceClient(c.ClientWithToken(0, c.JoinToken).Conn()).Register(ctx,
		&v1.RegisterRequest{WorkerId: "worker_004", Address: lis.Addr().String(), StoresFiles: true})
	wantStatus(t, "registering a storage worker with the join token", err, codes.Unauthenticated, "a worker enrols first")
	data := make([]byte, 64<<10)
	for i := range data {
		data[i] = byte(i)
	}
	for i := range 5 {
		if _, err := c.Client(0).Push(ctx, "secret"+string(rune('a'+i)), data); err != nil {
			t.Fatal(err)
		}
	}
	if n := accepted.Load(); n != 0 {
		t.Fatalf("the uncertified worker was connected to %d times", n)
	}
}

// A native function never takes a deployed function's name, nor the
// reverse: the second claim gets an error that says which holds it.
func TestNativeAndDeployedNamesNeverShadow(t *testing.T) {
	c := cluster.New(t, cluster.Options{Workers: 1})
	ctx := ctxTimeout(t, 30*time.Second)
	alice := userClient(ctx, t, c, "alice")
	if _, err := alice.Deploy(ctx, "add2", []byte(addScript), taskworker.DeploySpec{Runtime: v1.Runtime_RUNTIME_STARLARK}); err != nil {
		t.Fatal(err)
	}
	fake, err := c.EnrollWorker(0, "fake")
	if err != nil {
		t.Fatal(err)
	}
	_, err = v1.NewRegistryServiceClient(fake).Register(ctx, &v1.RegisterRequest{WorkerId: "fake", Address: "127.0.0.1:1",
		Functions: []*v1.FunctionSpec{{Name: "add2"}}})
	wantStatus(t, "a native function named as a deployed one", err, codes.AlreadyExists, `function "add2" is deployed (by user alice)`)
	_, err = alice.Deploy(ctx, "add", []byte(addScript), taskworker.DeploySpec{Runtime: v1.Runtime_RUNTIME_STARLARK, Export: "add2"})
	wantStatus(t, "deploying a native function's name", err, codes.AlreadyExists, "native function served by worker worker_001")

	// A real worker that brings such a function is refused, and says so.
	w, err := worker.New(worker.Config{ID: "shadow", PoolAddr: c.PoolAddr(0), JoinToken: c.JoinToken, CA: c.CA.CertPEM(), DataDir: t.TempDir()})
	if err != nil {
		t.Fatal(err)
	}
	if err := w.Register("add2", func(a, b int) int { return a - b }, false); err != nil {
		t.Fatal(err)
	}
	if err := w.Start(ctx, "127.0.0.1:0"); err != nil {
		t.Fatal(err)
	}
	defer w.Kill()
	wctx, cancel := context.WithTimeout(ctx, 3*time.Second)
	defer cancel()
	if err := w.WaitRegistered(wctx); err == nil || !strings.Contains(err.Error(), "is deployed") {
		t.Errorf("a worker bringing a deployed function's name: %v", err)
	}
}

// A revoked worker is dropped at once, its call in flight cut off, and it
// cannot come back: not with its certificate, not by enrolling its key
// again. Its id is free for a new key.
func TestRevokedWorkerIsDropped(t *testing.T) {
	c := cluster.New(t, cluster.Options{Workers: 2, Setup: func(w *worker.Server) error {
		if err := examples.Register(w.Register); err != nil {
			return err
		}
		if w.ID() != "worker_002" {
			return nil
		}
		return w.Register("hang", func(ctx context.Context) error { <-ctx.Done(); return ctx.Err() }, false)
	}})
	ctx := ctxTimeout(t, time.Minute)
	admin := c.Client(0)
	hung := make(chan error, 1)
	go func() {
		_, err := admin.Call(ctx, "hang")
		hung <- err
	}()
	waitUntil(t, 10*time.Second, "the call running on worker_002", func() bool { return c.Workers[1].Inflight() == 1 })

	if _, err := c.ClientWithToken(0, c.JoinToken).RevokeWorker(ctx, "worker_002"); status.Code(err) != codes.PermissionDenied {
		t.Errorf("revoking with the join token: %v", err)
	}
	revoked, err := admin.RevokeWorker(ctx, "worker_002")
	if err != nil || !revoked {
		t.Fatalf("revoke: %v, %v", revoked, err)
	}
	select {
	case err := <-hung:
		if status.Code(err) != codes.Unavailable {
			t.Errorf("the revoked worker's call in flight: %v; want Unavailable", err)
		}
	case <-time.After(20 * time.Second):
		t.Fatal("the revoked worker's call in flight was not cut off")
	}
	waitUntil(t, 10*time.Second, "the pool to drop worker_002", func() bool {
		ids := c.Pools[0].WorkerIDs()
		return len(ids) == 1 && ids[0] == "worker_001"
	})
	// The worker keeps trying: with its old certificate (refused), then
	// enrolling its key again (refused: revoked). It stays out.
	time.Sleep(3 * time.Second)
	if ids := c.Pools[0].WorkerIDs(); len(ids) != 1 {
		t.Fatalf("after revocation the pool lists %v", ids)
	}
	if revoked, err := admin.RevokeWorker(ctx, "worker_002"); err != nil || revoked {
		t.Errorf("revoking again: %v, %v; want nothing to revoke", revoked, err)
	}
	// A new key may take the freed id.
	if _, err := c.EnrollWorker(0, "worker_002"); err != nil {
		t.Errorf("enrolling the freed id with a new key: %v", err)
	}
	c.KillWorker(1)
}

// The worker admits only its pool's certificate: not a worker's of the same
// CA, not a pool certificate of another network, not another CA's, not
// none. Health stays open.
func TestWorkerAdmitsOnlyItsPool(t *testing.T) {
	c := cluster.New(t, cluster.Options{Workers: 1})
	ctx := ctxTimeout(t, 30*time.Second)
	cluster := c.Pools[0].ClusterID()
	stranger, err := pki.NewCA()
	if err != nil {
		t.Fatal(err)
	}
	issue := func(ca *pki.CA, uri string) *pki.Holder {
		cert, err := ca.IssueKeyPair(pki.Leaf{CommonName: pki.PoolCommonName, URIs: []string{uri}, Client: true, TTL: time.Hour})
		if err != nil {
			t.Fatal(err)
		}
		h := &pki.Holder{}
		h.Set(cert)
		return h
	}
	tests := []struct {
		name string
		cert *pki.Holder
		code codes.Code
	}{
		{"the pool", issue(c.CA, pki.PoolURI(cluster)), codes.OK},
		{"a worker of the network", issue(c.CA, pki.WorkerURI(cluster, "worker_002")), codes.PermissionDenied},
		{"a pool of another network", issue(c.CA, pki.PoolURI("tw-other")), codes.PermissionDenied},
		{"no certificate", nil, codes.PermissionDenied},
		{"another CA's pool", issue(stranger, pki.PoolURI(cluster)), codes.Unavailable},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			conn, err := grpc.NewClient(c.Workers[0].Addr(), grpc.WithTransportCredentials(credentials.NewTLS(
				pki.ClientConfig(pki.Verify{CA: c.CA.Pool(), URI: pki.WorkerURI(cluster, "worker_001")}, tt.cert))))
			if err != nil {
				t.Fatal(err)
			}
			defer conn.Close()
			_, err = v1.NewRPCServiceClient(conn).CallFunction(ctx, &v1.FunctionCallRequest{FunctionName: "add", Args: []byte("[1,2]")})
			if status.Code(err) != tt.code {
				t.Errorf("CallFunction: %v; want %s", err, tt.code)
			}
			_, err = v1.NewShardServiceClient(conn).Usage(ctx, &v1.UsageRequest{})
			if status.Code(err) != tt.code {
				t.Errorf("ShardService.Usage: %v; want %s", err, tt.code)
			}
			if tt.code == codes.PermissionDenied && !strings.Contains(err.Error(), "serves only its pool") {
				t.Errorf("the refusal does not say why: %v", err)
			}
		})
	}
}

// A client that does not hold the network's CA is refused with an error
// that names the CA it needs.
func TestClientWithoutTheCA(t *testing.T) {
	c := cluster.New(t, cluster.Options{Workers: 1})
	ctx := ctxTimeout(t, 30*time.Second)
	other, err := pki.NewCA()
	if err != nil {
		t.Fatal(err)
	}
	for name, opts := range map[string][]taskworker.ClientOption{
		"no CA":       nil,
		"another CA":  {taskworker.WithCA(other.CertPEM())},
		"a plaintext": {taskworker.WithInsecure()},
	} {
		cl, err := taskworker.Dial(c.PoolAddr(0), append(opts, taskworker.WithToken(c.AdminToken))...)
		if err != nil {
			t.Fatal(err)
		}
		_, err = cl.Workers(ctx)
		cl.Close()
		if name == "a plaintext" {
			if status.Code(err) != codes.Unavailable {
				t.Errorf("%s client: %v", name, err)
			}
			continue
		}
		var untrusted bool
		if st, ok := status.FromError(err); ok {
			untrusted = strings.Contains(st.Message(), c.CA.Name()) && strings.Contains(st.Message(), "--ca or TASKWORKER_CA")
		}
		if !untrusted {
			t.Errorf("%s: %v; want an error naming the CA %q and --ca", name, err, c.CA.Name())
		}
	}
}

func waitUntil(t *testing.T, within time.Duration, what string, cond func() bool) {
	t.Helper()
	deadline := time.Now().Add(within)
	for !cond() {
		if time.Now().After(deadline) {
			t.Fatalf("after %s, still waiting for %s", within, what)
		}
		time.Sleep(20 * time.Millisecond)
	}
}
