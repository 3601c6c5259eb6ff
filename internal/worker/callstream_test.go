package worker

import (
	"context"
	"net"
	"runtime"
	"testing"
	"time"

	"google.golang.org/grpc"
	"google.golang.org/grpc/codes"
	"google.golang.org/grpc/credentials/insecure"

	v1 "github.com/hivemind/taskworker/api/taskworker/v1"
)

// callStreamTo serves s's RPC service over real gRPC on loopback and opens
// a call stream to it.
func callStreamTo(t *testing.T, s *Server) v1.RPCService_CallStreamClient {
	t.Helper()
	lis, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	srv := grpc.NewServer()
	v1.RegisterRPCServiceServer(srv, rpcService{s: s})
	go func() { _ = srv.Serve(lis) }()
	t.Cleanup(srv.Stop)
	conn, err := grpc.NewClient(lis.Addr().String(), grpc.WithTransportCredentials(insecure.NewCredentials()))
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { conn.Close() })
	ctx, cancel := context.WithCancel(context.Background())
	t.Cleanup(cancel)
	stream, err := v1.NewRPCServiceClient(conn).CallStream(ctx)
	if err != nil {
		t.Fatal(err)
	}
	return stream
}

// newStreamWorker is a worker serving "add", and "block", which returns
// when its context ends.
func newStreamWorker(t *testing.T) *Server {
	t.Helper()
	s, err := New(Config{ID: "worker_cs"})
	if err != nil {
		t.Fatal(err)
	}
	if err := s.Register("add", func(_ context.Context, a, b int) (int, error) { return a + b, nil }, true); err != nil {
		t.Fatal(err)
	}
	block := func(ctx context.Context) (int, error) {
		<-ctx.Done()
		return 0, ctx.Err()
	}
	if err := s.Register("block", block, false); err != nil {
		t.Fatal(err)
	}
	return s
}

func recvReply(t *testing.T, stream v1.RPCService_CallStreamClient) *v1.CallReply {
	t.Helper()
	r, err := stream.Recv()
	if err != nil {
		t.Fatal(err)
	}
	return r
}

// Calls that never end do not hold up the calls behind them on the stream
// (each frame that finds every runner busy starts another), and a cancel
// frame ends the call it names, with its status.
func TestCallStreamRunsCallsBehindBlockedOnes(t *testing.T) {
	s := newStreamWorker(t)
	stream := callStreamTo(t, s)
	const blocked = maxIdleRunners + 10 // more than the runners kept idle
	for id := uint64(1); id <= blocked; id++ {
		if err := stream.Send(&v1.CallFrame{Id: id, Request: &v1.FunctionCallRequest{FunctionName: "block"}}); err != nil {
			t.Fatal(err)
		}
	}
	if err := stream.Send(&v1.CallFrame{Id: 1000, Request: &v1.FunctionCallRequest{FunctionName: "add", Args: []byte("[2, 3]")}}); err != nil {
		t.Fatal(err)
	}
	if r := recvReply(t, stream); r.Id != 1000 || r.Code != 0 || string(r.Response.GetResult()) != "5" {
		t.Fatalf("got reply %v, want call 1000's result 5", r)
	}
	during := runtime.NumGoroutine() // a runner for each blocked call, and more
	for id := uint64(1); id <= blocked; id++ {
		if err := stream.Send(&v1.CallFrame{Id: id, Cancel: true}); err != nil {
			t.Fatal(err)
		}
	}
	seen := map[uint64]bool{}
	for range blocked {
		r := recvReply(t, stream)
		if r.Code != int32(codes.Canceled) || seen[r.Id] || r.Id < 1 || r.Id > blocked {
			t.Fatalf("got reply %v, want each blocked call canceled once", r)
		}
		seen[r.Id] = true
	}
	// Once the burst is over, only maxIdleRunners runners stay: at least
	// blocked-maxIdleRunners of them end. Their ending is not awaited:
	// poll the count of goroutines.
	want := during - (blocked - maxIdleRunners)
	for deadline := time.Now().Add(30 * time.Second); runtime.NumGoroutine() > want && time.Now().Before(deadline); {
		time.Sleep(10 * time.Millisecond)
	}
	if n := runtime.NumGoroutine(); n > want {
		t.Errorf("%d goroutines after the burst, %d during it: the idle runners past %d did not end", n, during, maxIdleRunners)
	}
}

// A worker that stops answers the frames that come after NotRun, lets the
// calls running finish, and then ends the stream.
func TestCallStreamStoppingAnswersNotRun(t *testing.T) {
	s := newStreamWorker(t)
	stream := callStreamTo(t, s)
	if err := stream.Send(&v1.CallFrame{Id: 1, Request: &v1.FunctionCallRequest{FunctionName: "block"}}); err != nil {
		t.Fatal(err)
	}
	// Call 1 is running once a call sent after it has been answered.
	if err := stream.Send(&v1.CallFrame{Id: 2, Request: &v1.FunctionCallRequest{FunctionName: "add", Args: []byte("[1, 1]")}}); err != nil {
		t.Fatal(err)
	}
	if r := recvReply(t, stream); r.Id != 2 || r.Code != 0 {
		t.Fatalf("got %v, want call 2 answered", r)
	}
	close(s.draining)
	// Frames sent after the stop may race it; each is answered either way,
	// and those run after it are answered NotRun.
	sawNotRun := false
	for id := uint64(3); !sawNotRun; id++ {
		if id > 10000 {
			t.Fatal("no frame was answered NotRun after the worker began stopping")
		}
		if err := stream.Send(&v1.CallFrame{Id: id, Request: &v1.FunctionCallRequest{FunctionName: "add", Args: []byte("[1, 1]")}}); err != nil {
			t.Fatal(err)
		}
		r := recvReply(t, stream)
		if r.Id != id {
			t.Fatalf("got %v, want the answer to call %d", r, id)
		}
		sawNotRun = r.NotRun
		if sawNotRun && r.Code != int32(codes.Unavailable) {
			t.Fatalf("NotRun answer %v, want code Unavailable", r)
		}
	}
	// The stream waits for call 1; canceling it lets the stream end.
	if err := stream.Send(&v1.CallFrame{Id: 1, Cancel: true}); err != nil {
		t.Fatal(err)
	}
	if r := recvReply(t, stream); r.Id != 1 || r.Code != int32(codes.Canceled) {
		t.Fatalf("got %v, want call 1 canceled", r)
	}
	if r, err := stream.Recv(); err == nil {
		t.Fatalf("got %v after the last call ended, want the stream ended", r)
	}
}

// A cancel frame sent right behind its call cancels it, whichever runner
// takes each: the call is known to the stream before the next frame is
// received.
func TestCallStreamCancelRightBehindItsCall(t *testing.T) {
	s := newStreamWorker(t)
	stream := callStreamTo(t, s)
	const calls = 300
	for id := uint64(1); id <= calls; id++ {
		if err := stream.Send(&v1.CallFrame{Id: id, Request: &v1.FunctionCallRequest{FunctionName: "block"}}); err != nil {
			t.Fatal(err)
		}
		if err := stream.Send(&v1.CallFrame{Id: id, Cancel: true}); err != nil {
			t.Fatal(err)
		}
	}
	done := make(chan struct{})
	go func() {
		defer close(done)
		for range calls {
			r, err := stream.Recv()
			if err != nil || r.Code != int32(codes.Canceled) {
				t.Errorf("got reply %v, %v; want canceled", r, err)
				return
			}
		}
	}()
	select {
	case <-done:
	case <-time.After(60 * time.Second):
		t.Fatal("calls canceled right after they were sent still run: their cancel frames were lost")
	}
}
