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

// maxIdleRunners bounds the runners a call stream keeps waiting for frames
// once a burst of calls is over; the rest end.
const maxIdleRunners = 64

// CallStream serves the pool's calls multiplexed on one stream (see the
// proto): replies are sent as calls finish, and a cancel frame cancels its
// call. When the worker stops, the stream stops taking calls (answering
// NotRun, so the pool retries them elsewhere), finishes those running, and
// ends.
//
// Frames are received and run by long-lived goroutines, runners, in turn:
// one at a time holds the stream's receive side, and the runner that takes
// a frame lets the next one receive and runs the call itself. A call then
// reaches its function with no hand-off between goroutines, and on a
// goroutine whose stack has grown for the calls before it (RATIONALE.md,
// "What did the pool hop's second round cut?"). A runner is
// started whenever the last idle one takes a frame, so a long call never
// holds up the frames behind it.
func (r rpcService) CallStream(stream v1.RPCService_CallStreamServer) error {
	c := &callStream{s: r.s, stream: stream, ctx: stream.Context(),
		cancels: map[uint64]context.CancelFunc{}, recvErr: make(chan error, 1)}
	c.mu.Lock()
	c.startRunner()
	c.mu.Unlock()

	var err error
	select {
	case err = <-c.recvErr:
	case <-r.s.draining:
		// Finish the calls running, answering new ones NotRun, then end
		// the stream so that GracefulStop can complete.
		c.mu.Lock()
		c.stopping = true
		quiet := c.quietLocked()
		c.mu.Unlock()
		select {
		case <-quiet:
		case err = <-c.recvErr:
		}
	}
	c.end()
	if err != nil && !errors.Is(err, io.EOF) && status.Code(err) != codes.Canceled {
		return err
	}
	return nil
}

// callStream is the state of one CallStream shared by its runners.
type callStream struct {
	s       *Server
	stream  v1.RPCService_CallStreamServer
	ctx     context.Context
	recvErr chan error // the first error of Recv: the stream is over

	recvMu sync.Mutex // held by the runner receiving
	sendMu sync.Mutex // held around each Send

	mu       sync.Mutex
	cancels  map[uint64]context.CancelFunc // of the calls running
	idle     int                           // runners not handling a frame
	active   int                           // frames being handled
	stopping bool                          // the worker is stopping: run nothing new
	ended    bool                          // the handler is returning: handle nothing new
	quiet    chan struct{}                 // closed when active falls to 0; nil until awaited
}

// startRunner starts a runner; mu is held.
func (c *callStream) startRunner() {
	c.idle++
	go c.run()
}

// run receives frames and handles them until the stream ends, or until
// enough other runners are idle.
func (c *callStream) run() {
	for {
		c.recvMu.Lock()
		f, err := c.stream.Recv()
		if err != nil {
			c.recvMu.Unlock()
			select {
			case c.recvErr <- err:
			default:
			}
			c.mu.Lock()
			c.idle--
			c.mu.Unlock()
			return
		}
		c.mu.Lock()
		if c.ended {
			c.idle--
			c.mu.Unlock()
			c.recvMu.Unlock()
			return
		}
		c.idle--
		c.active++
		if c.idle == 0 {
			c.startRunner()
		}
		stopping := c.stopping
		// A call's cancel is registered before the next frame is
		// received: a cancel frame right behind its call, taken by
		// another runner, finds it.
		var cctx context.Context
		var cancel context.CancelFunc
		if !f.Cancel && !stopping {
			cctx, cancel = c.callContext(f)
			c.cancels[f.Id] = cancel
		}
		c.mu.Unlock()
		c.recvMu.Unlock()

		c.handle(f, stopping, cctx, cancel)

		c.mu.Lock()
		c.active--
		if c.active == 0 && c.quiet != nil {
			close(c.quiet)
			c.quiet = nil
		}
		if c.idle >= maxIdleRunners {
			c.mu.Unlock()
			return
		}
		c.idle++
		c.mu.Unlock()
	}
}

// callContext is the context of a call frame's call: the stream's, with
// the frame's deadline and trace.
func (c *callStream) callContext(f *v1.CallFrame) (context.Context, context.CancelFunc) {
	var cctx context.Context
	var cancel context.CancelFunc
	if f.DeadlineUnixNano != 0 {
		cctx, cancel = context.WithDeadline(c.ctx, time.Unix(0, f.DeadlineUnixNano))
	} else {
		cctx, cancel = context.WithCancel(c.ctx)
	}
	if f.Traceparent != "" && c.s.cfg.Tracing != nil {
		cctx = tracing.WithTraceparent(cctx, f.Traceparent)
	}
	return cctx, cancel
}

// handle runs one frame's call (in cctx, registered under the frame's id
// with cancel) and sends its reply, or cancels the call a cancel frame
// names.
func (c *callStream) handle(f *v1.CallFrame, stopping bool, cctx context.Context, cancel context.CancelFunc) {
	s := c.s
	if f.Cancel {
		c.mu.Lock()
		if cancel := c.cancels[f.Id]; cancel != nil {
			cancel()
		}
		c.mu.Unlock()
		return
	}
	if stopping {
		c.send(&v1.CallReply{Id: f.Id, NotRun: true, Code: int32(codes.Unavailable), Message: "worker " + s.cfg.ID + " is stopping"})
		return
	}
	resp, err := s.call(cctx, f.Request)
	c.mu.Lock()
	delete(c.cancels, f.Id)
	c.mu.Unlock()
	cancel()
	reply := &v1.CallReply{Id: f.Id, Response: resp}
	if err != nil {
		st := status.Convert(err)
		reply.Code, reply.Message = int32(st.Code()), st.Message()
	}
	c.send(reply)
}

// send sends a reply; a broken stream fails every call at the pool, so
// its error is not the runner's to handle.
func (c *callStream) send(reply *v1.CallReply) {
	c.sendMu.Lock()
	_ = c.stream.Send(reply)
	c.sendMu.Unlock()
}

// quietLocked returns a channel closed once no frame is being handled; mu
// is held.
func (c *callStream) quietLocked() <-chan struct{} {
	if c.active == 0 {
		closed := make(chan struct{})
		close(closed)
		return closed
	}
	if c.quiet == nil {
		c.quiet = make(chan struct{})
	}
	return c.quiet
}

// end lets no runner take another frame, cancels the calls running and
// waits for them to be answered: nothing is sent once the handler returns.
// Runners waiting to receive end when the stream's context does, as the
// handler returns.
func (c *callStream) end() {
	c.mu.Lock()
	c.ended = true
	for _, cancel := range c.cancels {
		cancel()
	}
	quiet := c.quietLocked()
	c.mu.Unlock()
	<-quiet
}
