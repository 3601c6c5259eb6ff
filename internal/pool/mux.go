package pool

import (
	"context"
	"sync"

	"google.golang.org/grpc"
	"google.golang.org/grpc/codes"
	"google.golang.org/grpc/status"
	"google.golang.org/protobuf/proto"

	v1 "github.com/hivemind/taskworker/api/taskworker/v1"
	"github.com/hivemind/taskworker/internal/tracing"
)

// muxMaxArgs is the largest call sent on a worker's call stream; larger
// ones go as their own unary call, so one big call cannot hold up the small
// ones behind it in the stream's flow-control window.
const muxMaxArgs = 64 << 10

// muxQueue bounds the frames waiting for a stream's sender. A caller that
// finds it full waits for room, or for its own deadline.
const muxQueue = 256

// ownSendRoom bounds the bytes of a stream handed to Send and not known to
// be written for a caller to send its own frame. gRPC's Send blocks only
// once 64 KiB of a stream's data wait unwritten (its write quota); under
// half of that, a caller's Send cannot wait (see sendOwn).
const ownSendRoom = 32 << 10

// grpcMessageHeader is the bytes gRPC adds to each message, which its
// write quota counts.
const grpcMessageHeader = 5

// callMux sends a worker's calls over one long-lived CallStream instead of
// a stream per call: no stream set-up, headers or trailers per call, which
// is most of what a forwarding hop costs.
//
// No caller ever calls Recv, nor a Send that can block, and mu is never
// held across either: a reader goroutine delivers the replies, and a sender
// goroutine sends the queued frames. A caller sends its own frame only
// when that Send cannot wait (sendOwn), which saves the hand-off to the
// sender on a stream that keeps up. A worker that stops reading its stream
// (stalled, swapped out, stopped) blocks only the sender, in flow control;
// each caller waits on a channel and its own context, so it returns at its
// deadline, and the calls to other workers, on other muxes, never notice
// (RATIONALE.md, "What bounds a call to a stalled worker?").
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
	done    chan struct{}          // closed once the stream has ended and pending is failed
	pending map[uint64]pendingCall // guarded by callMux.mu

	sendMu sync.Mutex // held around each Send, by the sender or a caller
	// Guarded by callMux.mu: the stream once its sender has opened it; the
	// bytes handed to Send, and how many of them are surely written: those
	// up to the end of the last frame answered (the worker read it, so
	// everything before it was on the wire).
	open          v1.RPCService_CallStreamClient
	sent, written int64
}

// pendingCall is a call awaiting its reply.
type pendingCall struct {
	reply chan *rawReply
	end   int64 // muxStream.sent just after its frame was handed to Send
}

// replyChans holds the channels calls wait on for their reply. A channel
// goes back once its caller has received the one reply sent on it; one
// whose caller gave up first is left to the garbage collector, since the
// reader may still send on it.
var replyChans = sync.Pool{New: func() any { return make(chan *rawReply, 1) }}

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
		done: make(chan struct{}), pending: map[uint64]pendingCall{}}
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
	m.mu.Lock()
	st.open = stream
	m.mu.Unlock()
	go m.read(st, stream)
	for {
		var f *v1.CallFrame
		select {
		case f = <-st.queue:
		case <-st.done:
			return
		}
		size := int64(proto.Size(f)) + grpcMessageHeader
		st.sendMu.Lock()
		m.mu.Lock()
		if !f.Cancel {
			if _, ok := st.pending[f.Id]; !ok { // its caller gave up
				m.mu.Unlock()
				st.sendMu.Unlock()
				continue
			}
		}
		m.handed(st, f, size)
		m.mu.Unlock()
		err := stream.Send(f)
		st.sendMu.Unlock()
		if err != nil {
			m.sendFailed(st, f)
			return
		}
	}
}

// sendOwn sends a caller's frame from the caller, saving the hand-off to
// the sender, when that Send cannot block: the stream is open, nothing is
// queued before the frame, no one else is sending, and the bytes of the
// stream not known to be written, with this frame's, are under
// ownSendRoom. gRPC's Send blocks only when a stream's data waiting to be
// written reach its write quota (64 KiB), and what waits is at most what
// was handed to Send after the last frame answered. It reports whether it
// took the frame (sent it, or answered it notSent).
func (m *callMux) sendOwn(st *muxStream, f *v1.CallFrame) bool {
	if len(st.queue) > 0 || !st.sendMu.TryLock() {
		return false
	}
	defer st.sendMu.Unlock()
	size := int64(proto.Size(f)) + grpcMessageHeader
	m.mu.Lock()
	stream := st.open
	if stream == nil || st.sent-st.written+size > ownSendRoom {
		m.mu.Unlock()
		return false
	}
	m.handed(st, f, size)
	m.mu.Unlock()
	if err := stream.Send(f); err != nil {
		m.sendFailed(st, f)
	}
	return true
}

// handed counts a frame handed to Send; mu is held.
func (m *callMux) handed(st *muxStream, f *v1.CallFrame, size int64) {
	st.sent += size
	if p, ok := st.pending[f.Id]; ok && !f.Cancel {
		p.end = st.sent
		st.pending[f.Id] = p
	}
}

// sendFailed ends a stream whose Send of f failed: nothing more can be
// sent, so f and the calls still queued never reached the worker. The
// reader then sees the stream end and fails the rest.
func (m *callMux) sendFailed(st *muxStream, f *v1.CallFrame) {
	m.mu.Lock()
	m.notSent(st, f)
	for len(st.queue) > 0 {
		m.notSent(st, <-st.queue)
	}
	m.mu.Unlock()
	st.cancel()
}

// notSent answers a call frame that was never sent; mu is held.
func (m *callMux) notSent(st *muxStream, f *v1.CallFrame) {
	if p, ok := st.pending[f.Id]; ok && !f.Cancel {
		delete(st.pending, f.Id)
		p.reply <- notSent
	}
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
		p, ok := st.pending[reply.id]
		delete(st.pending, reply.id)
		if p.end > st.written {
			st.written = p.end
		}
		m.mu.Unlock()
		if ok {
			p.reply <- reply
		}
	}
}

// end ends a stream, answering the calls still waiting with reply.
func (m *callMux) end(st *muxStream, reply *rawReply) {
	m.mu.Lock()
	if m.stream == st {
		m.stream = nil
	}
	for id, p := range st.pending {
		p.reply <- reply
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
	// The call's trace, when the pool traces it (no span otherwise: one
	// context lookup, nothing added to the frame).
	frame.Traceparent = tracing.Traceparent(ctx)
	ch := replyChans.Get().(chan *rawReply)
	m.mu.Lock()
	st := m.stream
	if st == nil {
		st = m.start()
	}
	m.nextID++
	frame.Id = m.nextID
	st.pending[frame.Id] = pendingCall{reply: ch}
	m.mu.Unlock()

	if !m.sendOwn(st, frame) {
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
		replyChans.Put(ch) // its one reply is taken: no one else holds it
		switch {
		case reply == errStreamBroken:
			return nil, status.Error(codes.Unavailable, reply.message), false
		case reply.notRun:
			return nil, errNotSent, false
		case reply.code != 0:
			return nil, status.Error(codes.Code(reply.code), reply.message), true
		}
		reply.answer.raw = reply.response
		return &reply.answer, nil, true
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
