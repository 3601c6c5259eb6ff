package pool

import (
	"context"
	"sync"

	"google.golang.org/grpc"
	"google.golang.org/grpc/codes"
	"google.golang.org/grpc/status"

	v1 "github.com/hivemind/taskworker/api/taskworker/v1"
)

// muxMaxArgs is the largest call sent on a worker's call stream; larger
// ones go as their own unary call, so one big call cannot hold up the small
// ones behind it in the stream's flow-control window.
const muxMaxArgs = 64 << 10

// muxQueue bounds the frames waiting for a stream's sender. A caller that
// finds it full waits for room, or for its own deadline.
const muxQueue = 256

// callMux sends a worker's calls over one long-lived CallStream instead of
// a stream per call: no stream set-up, headers or trailers per call, which
// is most of what a forwarding hop costs.
//
// No caller ever calls Send or Recv itself, and mu is never held across
// either: a sender goroutine sends the queued frames and a reader goroutine
// delivers the replies. A worker that stops reading its stream (stalled,
// swapped out, stopped) blocks only the sender, in flow control; each caller
// waits on a channel and its own context, so it returns at its deadline, and
// the calls to other workers, on other muxes, never notice (RATIONALE.md,
// "What bounds a call to a stalled worker?").
type callMux struct {
	client v1.RPCServiceClient

	mu     sync.Mutex // guards stream, nextID and the current stream's pending
	stream *muxStream
	nextID uint64
}

// muxStream is one CallStream with its queue and its calls awaiting replies.
type muxStream struct {
	ctx     context.Context // the stream's; canceled to end it
	cancel  context.CancelFunc
	queue   chan *v1.CallFrame
	done    chan struct{}             // closed once the stream has ended and pending is failed
	pending map[uint64]chan *rawReply // guarded by callMux.mu
}

// errStreamBroken is delivered to calls whose stream ended before their
// reply: the worker may or may not have run them.
var errStreamBroken = &rawReply{code: int32(codes.Unavailable), message: "the connection to the worker broke"}

// notSent is delivered to calls whose frame the sender could not send: the
// worker never saw them.
var notSent = &rawReply{notRun: true}

// start makes a stream whose sender opens it, so that no caller waits for
// the connection with mu held; mu is held.
func (m *callMux) start() *muxStream {
	ctx, cancel := context.WithCancel(context.Background())
	st := &muxStream{ctx: ctx, cancel: cancel, queue: make(chan *v1.CallFrame, muxQueue),
		done: make(chan struct{}), pending: map[uint64]chan *rawReply{}}
	m.stream = st
	go m.send(st)
	return st
}

// send opens the stream, starts its reader, and sends the queued frames
// until the stream ends. A call frame whose caller gave up before it was
// sent is skipped. Replies are read with forwardingCodec, which keeps each
// one's response encoded for the caller.
func (m *callMux) send(st *muxStream) {
	stream, err := m.client.CallStream(st.ctx, grpc.ForceCodecV2(codec))
	if err != nil {
		m.end(st, notSent)
		return
	}
	go m.read(st, stream)
	for {
		var f *v1.CallFrame
		select {
		case f = <-st.queue:
		case <-st.done:
			return
		}
		if !f.Cancel && !m.waiting(st, f.Id) {
			continue
		}
		if err := stream.Send(f); err != nil {
			// Nothing more can be sent: the calls still queued, and this
			// one, never reached the worker. The reader then sees the
			// stream end and fails the rest.
			m.mu.Lock()
			m.notSent(st, f)
			for len(st.queue) > 0 {
				m.notSent(st, <-st.queue)
			}
			m.mu.Unlock()
			st.cancel()
			return
		}
	}
}

// notSent answers a call frame that was never sent; mu is held.
func (m *callMux) notSent(st *muxStream, f *v1.CallFrame) {
	if ch, ok := st.pending[f.Id]; ok && !f.Cancel {
		delete(st.pending, f.Id)
		ch <- notSent
	}
}

func (m *callMux) waiting(st *muxStream, id uint64) bool {
	m.mu.Lock()
	defer m.mu.Unlock()
	_, ok := st.pending[id]
	return ok
}

// read delivers replies until the stream ends, then fails what is left.
func (m *callMux) read(st *muxStream, stream v1.RPCService_CallStreamClient) {
	for {
		reply := &rawReply{}
		if err := stream.RecvMsg(reply); err != nil {
			m.end(st, errStreamBroken)
			return
		}
		m.mu.Lock()
		ch := st.pending[reply.id]
		delete(st.pending, reply.id)
		m.mu.Unlock()
		if ch != nil {
			ch <- reply
		}
	}
}

// end ends a stream, answering the calls still waiting with reply.
func (m *callMux) end(st *muxStream, reply *rawReply) {
	m.mu.Lock()
	if m.stream == st {
		m.stream = nil
	}
	for id, ch := range st.pending {
		ch <- reply
		delete(st.pending, id)
	}
	close(st.done)
	m.mu.Unlock()
	st.cancel()
}

// call sends req and waits for its reply, or for ctx to end. reached
// reports whether the answer is the worker's, as forward's does.
func (m *callMux) call(ctx context.Context, req *v1.FunctionCallRequest) (a *answer, err error, reached bool) {
	frame := &v1.CallFrame{Request: req}
	if d, ok := ctx.Deadline(); ok {
		frame.DeadlineUnixNano = d.UnixNano()
	}
	ch := make(chan *rawReply, 1)
	m.mu.Lock()
	st := m.stream
	if st == nil {
		st = m.start()
	}
	m.nextID++
	frame.Id = m.nextID
	st.pending[frame.Id] = ch
	m.mu.Unlock()

	select {
	case st.queue <- frame: // room in the queue: the usual case, one lock
	default:
		select {
		case st.queue <- frame:
		case <-st.done:
			return nil, errNotSent, false
		case <-ctx.Done():
			m.forget(st, frame.Id)
			return nil, status.FromContextError(ctx.Err()).Err(), false
		}
	}
	select {
	case reply := <-ch:
		switch {
		case reply == errStreamBroken:
			return nil, status.Error(codes.Unavailable, reply.message), false
		case reply.notRun:
			return nil, errNotSent, false
		case reply.code != 0:
			return nil, status.Error(codes.Code(reply.code), reply.message), true
		}
		return &answer{raw: reply.response}, nil, true
	case <-ctx.Done():
		if m.forget(st, frame.Id) {
			// Best effort: with the queue full the worker still ends the
			// call at the deadline its frame carries.
			select {
			case st.queue <- &v1.CallFrame{Id: frame.Id, Cancel: true}:
			default:
			}
		}
		return nil, status.FromContextError(ctx.Err()).Err(), true
	}
}

// forget stops waiting for a call's reply; it reports whether the call was
// still waiting.
func (m *callMux) forget(st *muxStream, id uint64) bool {
	m.mu.Lock()
	defer m.mu.Unlock()
	_, ok := st.pending[id]
	delete(st.pending, id)
	return ok
}

// close ends the stream; its calls still waiting fail as broken.
func (m *callMux) close() {
	m.mu.Lock()
	defer m.mu.Unlock()
	if m.stream != nil {
		m.stream.cancel()
		m.stream = nil
	}
}
