package pool

import (
	"context"
	"net"
	"strings"
	"sync"
	"sync/atomic"
	"testing"
	"time"

	"google.golang.org/grpc"
	"google.golang.org/grpc/codes"
	"google.golang.org/grpc/credentials/insecure"
	"google.golang.org/grpc/status"

	v1 "github.com/hivemind/taskworker/api/taskworker/v1"
)

// notReading serves CallStream without ever reading it, over real gRPC:
// the pool's sends stop in flow control once the stream's window is full.
type notReading struct {
	v1.UnimplementedRPCServiceServer
	streams atomic.Int64
}

func (n *notReading) CallStream(stream v1.RPCService_CallStreamServer) error {
	n.streams.Add(1)
	<-stream.Context().Done()
	return nil
}

func dialNotReading(t *testing.T) (*callMux, *grpc.ClientConn, *notReading) {
	t.Helper()
	lis, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	srv := &notReading{}
	// A small fixed window (no growth): full after a frame or two.
	s := grpc.NewServer(grpc.InitialWindowSize(64<<10), grpc.InitialConnWindowSize(64<<10))
	v1.RegisterRPCServiceServer(s, srv)
	go func() { _ = s.Serve(lis) }()
	t.Cleanup(s.Stop)
	conn, err := grpc.NewClient(lis.Addr().String(), grpc.WithTransportCredentials(insecure.NewCredentials()))
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { conn.Close() })
	return &callMux{client: v1.NewRPCServiceClient(conn)}, conn, srv
}

// muxBound is how long a call may take past its deadline and still count as
// ending at it: generous, for a loaded machine. A call held by the stalled
// stream would never end.
const muxBound = 30 * time.Second

// result is what one mux call returned, and when.
type result struct {
	err  error
	took time.Duration
}

func callConcurrently(m *callMux, n int, args []byte, ctxFor func() (context.Context, context.CancelFunc)) []result {
	out := make([]result, n)
	var wg sync.WaitGroup
	for i := range n {
		wg.Go(func() {
			ctx, cancel := ctxFor()
			defer cancel()
			start := time.Now()
			_, err, _ := m.call(ctx, &v1.FunctionCallRequest{FunctionName: "f", Args: args})
			out[i] = result{err, time.Since(start)}
		})
	}
	wg.Wait()
	return out
}

// A worker that stops reading its call stream holds none of its callers
// past their deadlines, however many queue behind the blocked send; and
// closing the mux (retiring the worker) ends the calls that have no
// deadline. Small calls, which callers send themselves while the stream
// keeps up (sendOwn), fill the window and gRPC's write quota too, and then
// queue like the rest.
func TestMuxStalledStream(t *testing.T) {
	cases := []struct {
		name     string
		deadline time.Duration // 0: none; the mux is closed instead
		want     codes.Code
		calls    int
		argBytes int
	}{
		{"callers with deadlines get them", 2 * time.Second, codes.DeadlineExceeded, 40, 60 << 10},
		{"callers without are freed by close", 0, codes.Unavailable, 40, 60 << 10},
		{"small calls past the window and the write quota", 2 * time.Second, codes.DeadlineExceeded, 400, 1 << 10},
	}
	for _, c := range cases {
		t.Run(c.name, func(t *testing.T) {
			args := []byte(`["` + strings.Repeat("x", c.argBytes) + `"]`)
			m, _, srv := dialNotReading(t)
			ctxFor := func() (context.Context, context.CancelFunc) {
				if c.deadline == 0 {
					return context.WithCancel(context.Background())
				}
				return context.WithTimeout(context.Background(), c.deadline)
			}
			bound := c.deadline + muxBound
			if c.deadline == 0 {
				go func() {
					// Close once the worker has the stream and every call
					// waits on it.
					for srv.streams.Load() == 0 {
						time.Sleep(10 * time.Millisecond)
					}
					waitPending(m, c.calls)
					m.close()
				}()
			}
			done := make(chan []result)
			go func() { done <- callConcurrently(m, c.calls, args, ctxFor) }()
			var results []result
			select {
			case results = <-done:
			case <-time.After(bound):
				t.Fatalf("calls on a stalled stream still waiting after %s", bound)
			}
			for i, r := range results {
				if status.Code(r.err) != c.want {
					t.Errorf("call %d: %v after %s; want %v", i, r.err, r.took, c.want)
				}
			}
			if srv.streams.Load() == 0 {
				t.Fatal("no stream was opened: the test proved nothing")
			}
		})
	}
}

// waitPending waits until n calls wait on m's stream.
func waitPending(m *callMux, n int) {
	for {
		m.mu.Lock()
		waiting := m.stream != nil && len(m.stream.pending) == n
		m.mu.Unlock()
		if waiting {
			return
		}
		time.Sleep(10 * time.Millisecond)
	}
}
