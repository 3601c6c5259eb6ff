package quota_test

import (
	"context"
	"net"
	"strings"
	"testing"
	"time"

	clientv3 "go.etcd.io/etcd/client/v3"
	"google.golang.org/grpc"
	"google.golang.org/grpc/codes"
	"google.golang.org/grpc/credentials/insecure"
	"google.golang.org/grpc/status"
	"google.golang.org/protobuf/proto"

	v1 "github.com/hivemind/taskworker/api/taskworker/v1"
	"github.com/hivemind/taskworker/internal/etcdserver"
	"github.com/hivemind/taskworker/internal/quota"
)

func startEtcd(t *testing.T) *clientv3.Client {
	t.Helper()
	cfg := etcdserver.DefaultConfig(t.TempDir())
	cfg.TickMs, cfg.ElectionMs = 10, 100
	srv, err := etcdserver.Start(context.Background(), cfg)
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(srv.Close)
	cli, err := clientv3.New(clientv3.Config{Endpoints: srv.Endpoints(), DialTimeout: 5 * time.Second})
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { cli.Close() })
	return cli
}

// running starts a store's watch and waits until it has loaded.
func running(t *testing.T, s *quota.Store) {
	ctx, cancel := context.WithCancel(context.Background())
	done := make(chan struct{})
	ready := make(chan struct{})
	go func() { defer close(done); s.Run(ctx, ready) }()
	t.Cleanup(func() { cancel(); <-done })
	<-ready
}

func TestLimitsLayerOwnOverDefaultsOverBuiltin(t *testing.T) {
	cli := startEtcd(t)
	ctx := context.Background()
	w := quota.New(cli, "/tw/")
	// A second store, as on another pool replica, sees the same quotas.
	r := quota.New(cli, "/tw/")
	running(t, r)

	if _, err := w.Set(ctx, "", &v1.Quota{Calls: proto.Int64(32), StorageBytes: proto.Int64(1 << 30)}, false); err != nil {
		t.Fatal(err)
	}
	if _, err := w.Set(ctx, "bob", &v1.Quota{StorageBytes: proto.Int64(10 << 30)}, false); err != nil {
		t.Fatal(err)
	}
	// A later change of one field keeps the others.
	if _, err := w.Set(ctx, "bob", &v1.Quota{Tasks: proto.Int64(5)}, false); err != nil {
		t.Fatal(err)
	}
	want := map[string]quota.Limits{
		"bob":   {StorageBytes: 10 << 30, Modules: quota.Builtin.Modules, ModuleBytes: quota.Builtin.ModuleBytes, Calls: 32, Tasks: 5, KeepVersions: 10},
		"alice": {StorageBytes: 1 << 30, Modules: quota.Builtin.Modules, ModuleBytes: quota.Builtin.ModuleBytes, Calls: 32, Tasks: quota.Builtin.Tasks, KeepVersions: 10},
	}
	for user, w := range want {
		deadline := time.Now().Add(10 * time.Second)
		for {
			got, err := r.Limits(ctx, user)
			if err != nil {
				t.Fatal(err)
			}
			if got == w {
				break
			}
			if time.Now().After(deadline) {
				t.Fatalf("Limits(%s) = %+v, want %+v", user, got, w)
			}
			time.Sleep(20 * time.Millisecond)
		}
	}

	// Reset forgets bob's own quotas: the defaults apply again.
	if _, err := w.Set(ctx, "bob", &v1.Quota{}, true); err != nil {
		t.Fatal(err)
	}
	own, eff, err := w.Get(ctx, "bob")
	if err != nil {
		t.Fatal(err)
	}
	if own.StorageBytes != nil || eff.GetStorageBytes() != 1<<30 {
		t.Fatalf("after reset: own %v, effective %v", own, eff)
	}
	_, users, err := w.List(ctx)
	if err != nil || len(users) != 0 {
		t.Fatalf("List after reset: %v, %v (a user with no quota of their own keeps no record)", users, err)
	}
}

func TestBadQuotasAreRefused(t *testing.T) {
	cli := startEtcd(t)
	s := quota.New(cli, "/tw/")
	for _, tc := range []struct {
		user string
		q    *v1.Quota
		want string
	}{
		{"bob", &v1.Quota{Calls: proto.Int64(-1)}, "calls quota -1 is negative"},
		{"bob/x", &v1.Quota{Calls: proto.Int64(1)}, "user"},
		{"../etc", &v1.Quota{}, "user"},
	} {
		_, err := s.Set(context.Background(), tc.user, tc.q, false)
		if err == nil || !strings.Contains(err.Error(), tc.want) {
			t.Errorf("Set(%q, %v) = %v, want an error with %q", tc.user, tc.q, err, tc.want)
		}
	}
}

// The service over real gRPC: the auth table decides who may call
// SetQuota; here the server's own checks are crossed.
func TestServerChecksWhoseQuotaIsRead(t *testing.T) {
	cli := startEtcd(t)
	store := quota.New(cli, "/tw/")
	// The token's user is carried in metadata for this test; the pool's
	// resolver reads it from the verified token instead.
	user := func(ctx context.Context, id string) (string, error) {
		if id == "" || id == "bob" {
			return "bob", nil
		}
		return "", status.Errorf(codes.PermissionDenied, "user_id %q does not match the token's user", id)
	}
	g := grpc.NewServer()
	quota.NewServer(store, user).Register(g)
	lis, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	go g.Serve(lis)
	t.Cleanup(g.Stop)
	conn, err := grpc.NewClient(lis.Addr().String(), grpc.WithTransportCredentials(insecure.NewCredentials()))
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { conn.Close() })
	c := v1.NewQuotaServiceClient(conn)
	ctx := context.Background()

	for _, tc := range []struct {
		req  *v1.SetQuotaRequest
		code codes.Code
	}{
		{&v1.SetQuotaRequest{User: "bob", Quota: &v1.Quota{Calls: proto.Int64(8)}}, codes.OK},
		{&v1.SetQuotaRequest{Defaults: true, Quota: &v1.Quota{Tasks: proto.Int64(50)}}, codes.OK},
		{&v1.SetQuotaRequest{}, codes.InvalidArgument},
		{&v1.SetQuotaRequest{User: "bob", Defaults: true}, codes.InvalidArgument},
		{&v1.SetQuotaRequest{Defaults: true, Reset_: true}, codes.InvalidArgument},
		{&v1.SetQuotaRequest{User: "bob", Quota: &v1.Quota{StorageBytes: proto.Int64(-5)}}, codes.InvalidArgument},
		{&v1.SetQuotaRequest{User: "a b", Quota: &v1.Quota{}}, codes.InvalidArgument},
	} {
		_, err := c.SetQuota(ctx, tc.req)
		if status.Code(err) != tc.code {
			t.Errorf("SetQuota(%v) = %v, want %v", tc.req, err, tc.code)
		}
	}
	got, err := c.GetQuota(ctx, &v1.GetQuotaRequest{})
	if err != nil {
		t.Fatal(err)
	}
	if got.User != "bob" || got.Effective.GetCalls() != 8 || got.Effective.GetTasks() != 50 || got.Own.Tasks != nil {
		t.Fatalf("GetQuota = %v", got)
	}
	if _, err := c.GetQuota(ctx, &v1.GetQuotaRequest{User: "eve"}); status.Code(err) != codes.PermissionDenied {
		t.Fatalf("bob read eve's quota: %v", err)
	}
	list, err := c.ListQuotas(ctx, &v1.ListQuotasRequest{})
	if err != nil || len(list.Users) != 1 || list.Defaults.GetTasks() != 50 {
		t.Fatalf("ListQuotas = %v, %v", list, err)
	}
}

func TestExceededNamesTheQuotaAndTheUse(t *testing.T) {
	err := quota.Exceeded("bob", quota.Storage, 10<<20, 9<<20+512<<10, 1<<20)
	if status.Code(err) != codes.ResourceExhausted {
		t.Fatalf("code %v", status.Code(err))
	}
	want := "storage quota of bob exceeded: the limit is 10 MiB, 9.5 MiB in use, and this request needs 1 MiB more; free some, or ask an admin to raise it (taskworker quota set bob --storage N)"
	if got := status.Convert(err).Message(); got != want {
		t.Fatalf("message\n got %s\nwant %s", got, want)
	}
}
