package overload_test

import (
	"context"
	"errors"
	"fmt"
	"net"
	"sync/atomic"
	"testing"
	"time"

	"go.etcd.io/etcd/api/v3/v3rpc/rpctypes"
	"google.golang.org/grpc"
	"google.golang.org/grpc/codes"
	"google.golang.org/grpc/credentials/insecure"
	healthpb "google.golang.org/grpc/health/grpc_health_v1"
	"google.golang.org/grpc/status"

	"github.com/hivemind/taskworker/internal/overload"
)

// pushingBack answers its first n Checks with err, then SERVING.
type pushingBack struct {
	healthpb.UnimplementedHealthServer
	n     int64
	err   error
	calls atomic.Int64
}

func (p *pushingBack) Check(context.Context, *healthpb.HealthCheckRequest) (*healthpb.HealthCheckResponse, error) {
	if p.calls.Add(1) <= p.n {
		return nil, p.err
	}
	return &healthpb.HealthCheckResponse{Status: healthpb.HealthCheckResponse_SERVING}, nil
}

// serve runs srv on a real gRPC server over TCP and returns a client
// connection retrying with retry.
func serve(t *testing.T, srv healthpb.HealthServer, retry overload.Retry) healthpb.HealthClient {
	t.Helper()
	lis, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	s := grpc.NewServer()
	healthpb.RegisterHealthServer(s, srv)
	go func() { _ = s.Serve(lis) }()
	t.Cleanup(s.Stop)
	conn, err := grpc.NewClient(lis.Addr().String(), grpc.WithTransportCredentials(insecure.NewCredentials()),
		grpc.WithUnaryInterceptor(retry.UnaryClientInterceptor()))
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { conn.Close() })
	return healthpb.NewHealthClient(conn)
}

func TestUnaryClientInterceptor(t *testing.T) {
	final := status.Error(codes.ResourceExhausted, "arguments are over the limit")
	cases := []struct {
		name      string
		pushBacks int64
		err       error
		timeout   time.Duration
		wantCode  codes.Code
		wantCalls int64
		retry     overload.Retry
	}{
		{"pushed back twice, then served", 2, overload.Error(time.Millisecond, "busy"), time.Minute, codes.OK, 3, overload.DefaultRetry},
		{"pushed back every time: gives up after its attempts", 1000, overload.Error(time.Millisecond, "busy"), time.Minute, codes.ResourceExhausted, int64(overload.DefaultRetry.Attempts), overload.DefaultRetry},
		{"ResourceExhausted without RetryInfo is final", 1, final, time.Minute, codes.ResourceExhausted, 1, overload.DefaultRetry},
		{"other errors are not retried", 1, status.Error(codes.Unavailable, "down"), time.Minute, codes.Unavailable, 1, overload.DefaultRetry},
		// The asked-for delay cannot fit before the deadline: the caller
		// hears "busy" at once, not DeadlineExceeded later.
		{"no retry past the deadline", 1, overload.Error(time.Hour, "busy"), time.Minute, codes.ResourceExhausted, 1, overload.Retry{Attempts: 8, MaxWait: time.Hour}},
	}
	for _, c := range cases {
		t.Run(c.name, func(t *testing.T) {
			srv := &pushingBack{n: c.pushBacks, err: c.err}
			client := serve(t, srv, c.retry)
			ctx, cancel := context.WithTimeout(context.Background(), c.timeout)
			defer cancel()
			_, err := client.Check(ctx, &healthpb.HealthCheckRequest{})
			if status.Code(err) != c.wantCode || srv.calls.Load() != c.wantCalls {
				t.Fatalf("got %v after %d calls; want %v after %d", err, srv.calls.Load(), c.wantCode, c.wantCalls)
			}
		})
	}
}

func TestRetryDelay(t *testing.T) {
	cases := []struct {
		err  error
		want time.Duration
		ok   bool
	}{
		{overload.Error(250*time.Millisecond, "busy"), 250 * time.Millisecond, true},
		{status.Error(codes.ResourceExhausted, "too big"), 0, false},
		{status.Error(codes.Unavailable, "down"), 0, false},
		{errors.New("not a status"), 0, false},
		{nil, 0, false},
	}
	for _, c := range cases {
		if got, ok := overload.RetryDelay(c.err); got != c.want || ok != c.ok {
			t.Errorf("RetryDelay(%v) = %v, %v; want %v, %v", c.err, got, ok, c.want, c.ok)
		}
	}
}

// Waits grow with each retry up to the cap, each between half and all of
// its nominal value.
func TestWaitBackoffAndJitter(t *testing.T) {
	r := overload.Retry{Attempts: 10, MaxWait: time.Second}
	for attempt, nominal := range map[int]time.Duration{1: 100 * time.Millisecond, 2: 200 * time.Millisecond, 4: 800 * time.Millisecond, 9: time.Second} {
		for range 100 {
			if w := r.Wait(100*time.Millisecond, attempt); w < nominal/2 || w > nominal {
				t.Fatalf("attempt %d: waited %v; want between %v and %v", attempt, w, nominal/2, nominal)
			}
		}
	}
}

func ExampleRetryDelay() {
	err := overload.Error(100*time.Millisecond, "worker w1 is at its 64 concurrent calls; retry shortly")
	delay, ok := overload.RetryDelay(err)
	fmt.Println(status.Code(err), delay, ok)
	// Output: ResourceExhausted 100ms true
}

func TestEtcd(t *testing.T) {
	if err := overload.Etcd(rpctypes.ErrTooManyRequests); status.Code(err) != codes.ResourceExhausted {
		t.Errorf("etcd's too many requests: %v; want a pushed-back ResourceExhausted", err)
	} else if _, ok := overload.RetryDelay(err); !ok {
		t.Errorf("etcd's too many requests: %v carries no retry delay", err)
	}
	// The database full is ResourceExhausted too, but waiting does not fix it.
	for _, err := range []error{rpctypes.ErrNoSpace, rpctypes.ErrTimeout, context.DeadlineExceeded, errors.New("x")} {
		if got := overload.Etcd(err); got != nil {
			t.Errorf("Etcd(%v) = %v; want nil (not a push-back)", err, got)
		}
	}
}
