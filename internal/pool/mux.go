package pool

import (
	"context"
	"sync"

	"google.golang.org/grpc/codes"
	"google.golang.org/grpc/status"

	v1 "github.com/hivemind/taskworker/api/taskworker/v1"
)

// muxMaxArgs is the largest call sent on a worker's call stream; larger
// ones go as their own unary call, so one big call cannot hold up the small
// ones behind it in the stream's flow-control window.
const muxMaxArgs = 64 << 10

// callMux sends a worker's calls over one long-lived CallStream instead of
// a stream per call: no stream set-up, headers or trailers per call, which
// is most of what a forwarding hop costs.
type callMux struct {
	client v1.RPCServiceClient

	mu      sync.Mutex // guards the fields below, and serialises Send
	stream  v1.RPCService_CallStreamClient
	cancel  context.CancelFunc
	pending map[uint64]chan *v1.CallReply
	nextID  uint64
}

// errStreamBroken is delivered to calls whose stream ended before their
// reply: the worker may or may not have run them.
var errStreamBroken = &v1.CallReply{Code: int32(codes.Unavailable), Message: "the connection to the worker broke"}

// open starts the stream and its reader; mu is held.
func (m *callMux) open() error {
	ctx, cancel := context.WithCancel(context.Background())
	stream, err := m.client.CallStream(ctx)
	if err != nil {
		cancel()
		return err
	}
	m.stream, m.cancel = stream, cancel
	m.pending = map[uint64]chan *v1.CallReply{}
	go m.read(stream, m.pending)
	return nil
}

// read delivers replies until the stream ends, then fails what is left.
func (m *callMux) read(stream v1.RPCService_CallStreamClient, pending map[uint64]chan *v1.CallReply) {
	for {
		reply, err := stream.Recv()
		m.mu.Lock()
		if err != nil {
			if m.stream == stream {
				m.stream = nil
				m.cancel()
			}
			for id, ch := range pending {
				ch <- errStreamBroken
				delete(pending, id)
			}
			m.mu.Unlock()
			return
		}
		ch := pending[reply.Id]
		delete(pending, reply.Id)
		m.mu.Unlock()
		if ch != nil {
			ch <- reply
		}
	}
}

// call sends req and waits for its reply. reached reports whether the
// answer is the worker's, as forward's does.
func (m *callMux) call(ctx context.Context, req *v1.FunctionCallRequest) (resp *v1.FunctionCallResponse, err error, reached bool) {
	frame := &v1.CallFrame{Request: req}
	if d, ok := ctx.Deadline(); ok {
		frame.DeadlineUnixNano = d.UnixNano()
	}
	ch := make(chan *v1.CallReply, 1)
	m.mu.Lock()
	if m.stream == nil {
		if err := m.open(); err != nil {
			m.mu.Unlock()
			return nil, errNotSent, false
		}
	}
	stream, pending := m.stream, m.pending
	m.nextID++
	frame.Id = m.nextID
	pending[frame.Id] = ch
	err = stream.Send(frame)
	if err != nil {
		delete(pending, frame.Id)
	}
	m.mu.Unlock()
	if err != nil {
		return nil, errNotSent, false // a failed Send sends nothing
	}
	select {
	case reply := <-ch:
		switch {
		case reply == errStreamBroken:
			return nil, status.Error(codes.Unavailable, reply.Message), false
		case reply.NotRun:
			return nil, errNotSent, false
		case reply.Code != 0:
			return nil, status.Error(codes.Code(reply.Code), reply.Message), true
		}
		return reply.Response, nil, true
	case <-ctx.Done():
		m.mu.Lock()
		if _, waiting := pending[frame.Id]; waiting {
			delete(pending, frame.Id)
			if m.stream == stream {
				_ = stream.Send(&v1.CallFrame{Id: frame.Id, Cancel: true})
			}
		}
		m.mu.Unlock()
		return nil, status.FromContextError(ctx.Err()).Err(), true
	}
}

// close ends the stream.
func (m *callMux) close() {
	m.mu.Lock()
	defer m.mu.Unlock()
	if m.cancel != nil {
		m.cancel()
	}
	m.stream = nil
}
