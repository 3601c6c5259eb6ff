package auth_test

import (
	"context"
	"net"
	"strings"
	"testing"

	"google.golang.org/grpc"
	"google.golang.org/grpc/codes"
	"google.golang.org/grpc/credentials/insecure"
	"google.golang.org/grpc/health"
	healthpb "google.golang.org/grpc/health/grpc_health_v1"
	"google.golang.org/grpc/status"
	"google.golang.org/protobuf/types/known/emptypb"

	v1 "github.com/hivemind/taskworker/api/taskworker/v1"
	"github.com/hivemind/taskworker/internal/auth"
	"github.com/hivemind/taskworker/internal/cluster"
)

// TestEveryMethodIsInTheTable walks every service registered on a real
// pool's and a real (file-storing) worker's grpc.Server and fails for any
// method that internal/auth's table does not list. Adding an RPC without an
// entry fails here, with
//
//	the pool serves 1 methods with no entry in internal/auth's table (so every
//	call is refused): /taskworker.v1.AdminService/NewMethod; add each to
//	methods in internal/auth/table.go
func TestEveryMethodIsInTheTable(t *testing.T) {
	c := cluster.New(t, cluster.Options{Workers: 1})
	if err := auth.CheckServices(auth.Pool, c.Pools[0].Services()); err != nil {
		t.Error(err)
	}
	services := c.Workers[0].Services()
	if _, ok := services["taskworker.v1.ShardService"]; !ok {
		t.Fatalf("the worker serves no ShardService (%d services): the walk would miss its methods", len(services))
	}
	if err := auth.CheckServices(auth.Worker, services); err != nil {
		t.Error(err)
	}
}

func TestAuthorize(t *testing.T) {
	const (
		user   = v1.Role_ROLE_USER
		worker = v1.Role_ROLE_WORKER
		admin  = v1.Role_ROLE_ADMIN
	)
	tests := []struct {
		method string
		role   v1.Role
		want   string // "" admits; else a substring of the PermissionDenied message
	}{
		{v1.RPCService_CallFunction_FullMethodName, user, ""},
		{v1.RPCService_CallFunction_FullMethodName, admin, ""},
		{v1.RPCService_CallFunction_FullMethodName, worker, "use a token with role user"},
		{v1.FileService_Push_FullMethodName, user, ""},
		{v1.RegistryService_Register_FullMethodName, worker, "a worker's certificate"},
		{v1.RegistryService_Register_FullMethodName, admin, "a worker's certificate"},
		{v1.ModuleService_GetModule_FullMethodName, user, "a worker's certificate"},
		{v1.AdminService_CreateToken_FullMethodName, user, "use a token with role admin"},
		{v1.AdminService_CreateToken_FullMethodName, admin, ""},
		{v1.AdminService_Status_FullMethodName, worker, "use a token with role admin"},
		{v1.SecretService_Put_FullMethodName, user, ""},
		{v1.SecretService_Audit_FullMethodName, worker, "use a token with role user"},
		{v1.EgressService_Fetch_FullMethodName, user, ""},
		{v1.KeyService_RotateKeys_FullMethodName, user, "use a token with role admin"},
		{v1.KeyService_RotateKeys_FullMethodName, worker, "use a token with role admin"},
		{v1.KeyService_RotateKeys_FullMethodName, admin, ""},
		{v1.RPCService_CallStream_FullMethodName, admin, "not served by the pool"},
		{v1.ShardService_GetShard_FullMethodName, admin, "not served by the pool"},
		{"/taskworker.v1.AdminService/NewMethod", admin, "not in the pool's authorization table"},
		{"/taskworker.v1.FileService/", user, "not in the pool's authorization table"},
		{"", admin, "not in the pool's authorization table"},
	}
	for _, tt := range tests {
		t.Run(tt.method+" "+tt.role.String(), func(t *testing.T) {
			err := auth.Authorize(tt.method, tt.role)
			if tt.want == "" {
				if err != nil {
					t.Fatalf("refused: %v", err)
				}
				return
			}
			if st := status.Convert(err); st.Code() != codes.PermissionDenied || !strings.Contains(st.Message(), tt.want) {
				t.Fatalf("got %v; want PermissionDenied containing %q", err, tt.want)
			}
		})
	}
}

const unlisted = "/taskworker.test.Extra/Unlisted"

// extraDesc is a service the table does not know, as a new RPC would be.
var extraDesc = grpc.ServiceDesc{
	ServiceName: "taskworker.test.Extra",
	HandlerType: (*any)(nil),
	Methods: []grpc.MethodDesc{{
		MethodName: "Unlisted",
		Handler: func(_ any, ctx context.Context, dec func(any) error, interceptor grpc.UnaryServerInterceptor) (any, error) {
			in := &emptypb.Empty{}
			if err := dec(in); err != nil {
				return nil, err
			}
			handler := func(context.Context, any) (any, error) { return &emptypb.Empty{}, nil }
			return interceptor(ctx, in, &grpc.UnaryServerInfo{FullMethod: unlisted}, handler)
		},
	}},
}

// TestUnlistedMethodIsDenied serves a method missing from the table on a
// real worker-style server: even the pool does not open it, and
// CheckServices names it.
func TestUnlistedMethodIsDenied(t *testing.T) {
	isPool := func(context.Context) error { return nil } // every caller is the pool here
	srv := grpc.NewServer(grpc.ChainUnaryInterceptor(auth.UnaryWorkerInterceptor(isPool)))
	srv.RegisterService(&extraDesc, struct{}{})
	healthpb.RegisterHealthServer(srv, health.NewServer())
	lis, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	go srv.Serve(lis)
	t.Cleanup(srv.Stop)
	conn, err := grpc.NewClient(lis.Addr().String(), grpc.WithTransportCredentials(insecure.NewCredentials()))
	if err != nil {
		t.Fatal(err)
	}
	defer conn.Close()
	ctx := context.Background()

	err = conn.Invoke(ctx, unlisted, &emptypb.Empty{}, &emptypb.Empty{})
	if st := status.Convert(err); st.Code() != codes.PermissionDenied || !strings.Contains(st.Message(), "not in the worker's authorization table") {
		t.Errorf("calling a method the table does not list, from the pool: %v; want PermissionDenied", err)
	}
	if _, err := healthpb.NewHealthClient(conn).Check(context.Background(), &healthpb.HealthCheckRequest{}); err != nil {
		t.Errorf("health, open to all: %v", err)
	}
	err = auth.CheckServices(auth.Worker, srv.GetServiceInfo())
	if err == nil || !strings.Contains(err.Error(), unlisted) {
		t.Errorf("CheckServices: %v; want it to name %s", err, unlisted)
	}
}
