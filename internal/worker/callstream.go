package worker

import (
	"context"
	"errors"
	"io"
	"sync"
	"time"

	"google.golang.org/grpc/codes"
	"google.golang.org/grpc/status"

	v1 "github.com/hivemind/taskworker/api/taskworker/v1"
	"github.com/hivemind/taskworker/internal/tracing"
)

// CallStream serves the pool's calls multiplexed on one stream (see the
// proto): each frame runs in its own goroutine, replies are sent as calls
// finish, and a cancel frame cancels its call. When the worker stops, the
// stream stops taking calls (answering NotRun, so the pool retries them
// elsewhere), finishes those running, and ends.
func (r rpcService) CallStream(stream v1.RPCService_CallStreamServer) error {
	s := r.s
	ctx := stream.Context()
	frames := make(chan *v1.CallFrame)
	recvErr := make(chan error, 1)
	go func() {
		defer close(frames)
		for {
			f, err := stream.Recv()
			if err != nil {
				recvErr <- err
				return
			}
			select {
			case frames <- f:
			case <-ctx.Done():
				// The stream ended; the handler may have returned already
				// (drained), and then nothing reads frames.
				recvErr <- status.FromContextError(ctx.Err()).Err()
				return
			}
		}
	}()

	var (
		sendMu  sync.Mutex
		mu      sync.Mutex
		cancels = map[uint64]context.CancelFunc{}
		running sync.WaitGroup
	)
	send := func(reply *v1.CallReply) {
		sendMu.Lock()
		defer sendMu.Unlock()
		_ = stream.Send(reply) // a broken stream fails every call at the pool
	}
	defer func() {
		mu.Lock()
		for _, cancel := range cancels {
			cancel()
		}
		mu.Unlock()
		running.Wait()
	}()
	draining := s.draining     // closed when the worker stops
	var finished chan struct{} // closed when the running calls are done, once stopping
	for {
		select {
		case f, ok := <-frames:
			if !ok {
				if err := <-recvErr; !errors.Is(err, io.EOF) && status.Code(err) != codes.Canceled {
					return err
				}
				return nil
			}
			if f.Cancel {
				mu.Lock()
				if cancel := cancels[f.Id]; cancel != nil {
					cancel()
				}
				mu.Unlock()
				continue
			}
			if finished != nil { // stopping: run nothing new
				send(&v1.CallReply{Id: f.Id, NotRun: true, Code: int32(codes.Unavailable), Message: "worker " + s.cfg.ID + " is stopping"})
				continue
			}
			cctx, cancel := context.WithCancel(ctx)
			if f.DeadlineUnixNano != 0 {
				cancel()
				cctx, cancel = context.WithDeadline(ctx, time.Unix(0, f.DeadlineUnixNano))
			}
			if f.Traceparent != "" && s.cfg.Tracing != nil {
				cctx = tracing.WithTraceparent(cctx, f.Traceparent)
			}
			mu.Lock()
			cancels[f.Id] = cancel
			mu.Unlock()
			running.Go(func() {
				resp, err := s.call(cctx, f.Request)
				mu.Lock()
				delete(cancels, f.Id)
				mu.Unlock()
				cancel()
				reply := &v1.CallReply{Id: f.Id, Response: resp}
				if err != nil {
					st := status.Convert(err)
					reply.Code, reply.Message = int32(st.Code()), st.Message()
				}
				send(reply)
			})
		case <-draining:
			// Finish the calls running, answering new ones NotRun, then end
			// the stream so that GracefulStop can complete.
			draining = nil
			finished = make(chan struct{})
			go func() {
				running.Wait()
				close(finished)
			}()
		case <-finished:
			return nil
		}
	}
}
