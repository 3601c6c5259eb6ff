package serving_test

import (
	"context"
	"errors"
	"fmt"
	"net"
	"testing"

	"go.etcd.io/etcd/api/v3/v3rpc/rpctypes"
	"google.golang.org/grpc"
	"google.golang.org/grpc/codes"
	"google.golang.org/grpc/credentials/insecure"
	"google.golang.org/grpc/health"
	healthpb "google.golang.org/grpc/health/grpc_health_v1"
	"google.golang.org/grpc/status"

	"github.com/hivemind/taskworker/internal/serving"
)

func TestEtcdError(t *testing.T) {
	tests := []struct {
		name string
		err  error
		want codes.Code
	}{
		{"canceled", context.Canceled, codes.Canceled},
		{"wrapped canceled", fmt.Errorf("get: %w", context.Canceled), codes.Canceled},
		{"canceled status", status.Error(codes.Canceled, "context canceled"), codes.Canceled},
		{"deadline", context.DeadlineExceeded, codes.DeadlineExceeded},
		{"own status", status.Error(codes.NotFound, "no such file"), codes.NotFound},
		{"etcd's own error", rpctypes.ErrNoSpace, codes.Unavailable},
		{"plain", errors.New("connection refused"), codes.Unavailable},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			if got := status.Code(serving.EtcdError(tt.err)); got != tt.want {
				t.Errorf("code %s, want %s", got, tt.want)
			}
		})
	}
}

// blockingHealth answers Watch by blocking until its stream ends.
type blockingHealth struct {
	healthpb.UnimplementedHealthServer
	started chan struct{}
}

func (h *blockingHealth) Watch(_ *healthpb.HealthCheckRequest, stream healthpb.Health_WatchServer) error {
	close(h.started)
	<-stream.Context().Done()
	return stream.Context().Err()
}

// TestGracefulStop stops a real server with an RPC that never ends: it
// waits for it until the deadline, then cuts it and reports the deadline;
// a server with no RPC running stops cleanly.
func TestGracefulStop(t *testing.T) {
	lis, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	srv := grpc.NewServer()
	h := &blockingHealth{started: make(chan struct{})}
	healthpb.RegisterHealthServer(srv, h)
	go srv.Serve(lis)
	conn, err := grpc.NewClient(lis.Addr().String(), grpc.WithTransportCredentials(insecure.NewCredentials()))
	if err != nil {
		t.Fatal(err)
	}
	defer conn.Close()
	stream, err := healthpb.NewHealthClient(conn).Watch(context.Background(), &healthpb.HealthCheckRequest{})
	if err != nil {
		t.Fatal(err)
	}
	<-h.started
	ctx, cancel := context.WithCancel(context.Background())
	cancel() // the deadline has passed: the running RPC is cut
	if err := serving.GracefulStop(ctx, srv); !errors.Is(err, context.Canceled) {
		t.Errorf("GracefulStop with an RPC running past the deadline: %v, want context.Canceled", err)
	}
	if _, err := stream.Recv(); status.Code(err) != codes.Unavailable && status.Code(err) != codes.Canceled {
		t.Errorf("the cut RPC ended with %v", err)
	}

	idle := grpc.NewServer()
	healthpb.RegisterHealthServer(idle, health.NewServer())
	lis2, _ := net.Listen("tcp", "127.0.0.1:0")
	go idle.Serve(lis2)
	if err := serving.GracefulStop(context.Background(), idle); err != nil {
		t.Errorf("GracefulStop of an idle server: %v", err)
	}
}

func TestNotCommitted(t *testing.T) {
	tests := []struct {
		name string
		err  error
		want bool
	}{
		{"nil stays nil", nil, false},
		{"a plain error is not a status", errors.New("boom"), false},
		{"an Unavailable status", status.Error(codes.Unavailable, "down"), true},
		{"already marked", serving.NotCommitted(status.Error(codes.Aborted, "race")), true},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			got := serving.NotCommitted(tt.err)
			if serving.IsNotCommitted(got) != tt.want {
				t.Fatalf("serving.IsNotCommitted(NotCommitted(%v)) = %v, want %v", tt.err, !tt.want, tt.want)
			}
			if tt.err == nil && got != nil {
				t.Fatalf("serving.NotCommitted(nil) = %v", got)
			}
			if tt.err != nil && status.Code(got) != status.Code(tt.err) {
				t.Fatalf("code changed: %v -> %v", status.Code(tt.err), status.Code(got))
			}
		})
	}
	if serving.IsNotCommitted(status.Error(codes.Unavailable, "down")) {
		t.Fatal("an unmarked status reads as not committed")
	}
}
