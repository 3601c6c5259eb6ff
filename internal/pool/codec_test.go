package pool

import (
	"context"
	"io"
	"net"
	"strings"
	"testing"
	"time"

	"google.golang.org/grpc"
	"google.golang.org/grpc/codes"
	"google.golang.org/grpc/credentials/insecure"
	"google.golang.org/grpc/status"
	"google.golang.org/protobuf/encoding/protowire"
	"google.golang.org/protobuf/proto"
	"google.golang.org/protobuf/reflect/protoreflect"

	v1 "github.com/hivemind/taskworker/api/taskworker/v1"
)

// TestRawReplyMatchesCallReply checks the hand-written reader against the
// generated code: the field numbers, and that every reply reads the same
// both ways, its response bytes decoding to the same message.
func TestRawReplyMatchesCallReply(t *testing.T) {
	fields := []struct {
		msg  protoreflect.ProtoMessage
		name protoreflect.Name
		num  protowire.Number
	}{
		{&v1.CallReply{}, "id", replyID},
		{&v1.CallReply{}, "response", replyResponse},
		{&v1.CallReply{}, "code", replyCode},
		{&v1.CallReply{}, "message", replyMessage},
		{&v1.CallReply{}, "not_run", replyNotRun},
		{&v1.FunctionCallResponse{}, "result", responseResult},
		{&v1.FunctionCallResponse{}, "worker_id", responseWorkerID},
		{&v1.FunctionCallResponse{}, "result_json", responseResultJSON},
	}
	for _, f := range fields {
		d := f.msg.ProtoReflect().Descriptor()
		fd := d.Fields().ByName(f.name)
		if fd == nil || fd.Number() != f.num {
			t.Errorf("%s.%s: the reader takes field %d, the proto has %v", d.Name(), f.name, f.num, fd)
		}
	}
	// Every field of the two messages is one the reader knows: a field
	// added to them must be added to rawReply and checkResponse too.
	for _, m := range []protoreflect.ProtoMessage{&v1.CallReply{}, &v1.FunctionCallResponse{}} {
		d := m.ProtoReflect().Descriptor()
		for i := range d.Fields().Len() {
			fd := d.Fields().Get(i)
			known := false
			for _, f := range fields {
				known = known || f.msg.ProtoReflect().Descriptor() == d && f.name == fd.Name()
			}
			if !known {
				t.Errorf("%s.%s is not read by rawReply/checkResponse", d.Name(), fd.Name())
			}
		}
	}

	replies := []*v1.CallReply{
		{},
		{Id: 7, Response: &v1.FunctionCallResponse{Result: []byte("3"), WorkerId: "worker_001"}},
		{Id: 1 << 60, Response: &v1.FunctionCallResponse{}},
		{Id: 9, Code: int32(codes.InvalidArgument), Message: "argument 2 (float64): héllo"},
		{Id: 10, NotRun: true, Code: int32(codes.Unavailable), Message: "worker w is stopping"},
		{Id: 11, Response: &v1.FunctionCallResponse{Result: []byte{0xff, 0}, ResultJson: "x"}},
	}
	for _, want := range replies {
		b, err := proto.Marshal(want)
		if err != nil {
			t.Fatal(err)
		}
		var r rawReply
		if err := r.unmarshal(b); err != nil {
			t.Fatalf("%v: %v", want, err)
		}
		if r.id != want.Id || r.code != want.Code || r.message != want.Message || r.notRun != want.NotRun {
			t.Errorf("read %+v from %v", r, want)
		}
		if (r.response == nil) != (want.Response == nil) {
			t.Errorf("%v: response read as %q", want, r.response)
			continue
		}
		if want.Response == nil {
			continue
		}
		got, err := (&answer{raw: r.response}).decode()
		if err != nil || !proto.Equal(got, want.Response) {
			t.Errorf("%v: response decodes to %v, %v", want, got, err)
		}
	}
}

// TestCheckResponseRefusesMalformed: what the pool forwards unread must
// decode at the caller as the worker meant it. Bytes a worker makes up are
// refused, and a known field of the wrong type too (protobuf would read it
// as an unknown field: an answer without its result).
func TestCheckResponseRefusesMalformed(t *testing.T) {
	tag := func(num protowire.Number, typ protowire.Type) []byte { return protowire.AppendTag(nil, num, typ) }
	cat := func(bs ...[]byte) []byte {
		var out []byte
		for _, b := range bs {
			out = append(out, b...)
		}
		return out
	}
	tests := []struct {
		name string
		b    []byte
	}{
		{"truncated tag", []byte{0x80}},
		{"length past the end", cat(tag(responseResult, protowire.BytesType), []byte{5, 'a'})},
		{"result as a varint", cat(tag(responseResult, protowire.VarintType), []byte{1})},
		{"worker_id as fixed32", cat(tag(responseWorkerID, protowire.Fixed32Type), []byte{1, 2, 3, 4})},
		{"worker_id not UTF-8", cat(tag(responseWorkerID, protowire.BytesType), []byte{2, 0xff, 0xfe})},
		{"result_json not UTF-8", cat(tag(responseResultJSON, protowire.BytesType), []byte{1, 0xc0})},
		{"field number 0", []byte{0x02, 0x00}},
		{"unknown field truncated", cat(tag(99, protowire.BytesType), []byte{9})},
		{"end group without start", tag(99, protowire.EndGroupType)},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			if err := checkResponse(tt.b); err == nil {
				t.Errorf("checkResponse(%x) accepted it", tt.b)
			}
			reply := cat(tag(replyID, protowire.VarintType), []byte{1}, protowire.AppendBytes(tag(replyResponse, protowire.BytesType), tt.b))
			if err := (&rawReply{}).unmarshal(reply); err == nil {
				t.Errorf("a reply with response %x was accepted", tt.b)
			}
		})
	}
	// Unknown fields pass, as protobuf keeps them.
	ok := cat(tag(99, protowire.VarintType), []byte{1}, protowire.AppendBytes(tag(responseResult, protowire.BytesType), []byte("1")))
	if err := checkResponse(ok); err != nil {
		t.Errorf("an unknown field: %v", err)
	}
}

// FuzzRawReply: whatever a worker sends, the reader does not panic, and
// what it accepts protobuf accepts too, with the same response.
func FuzzRawReply(f *testing.F) {
	for _, r := range []*v1.CallReply{
		{Id: 7, Response: &v1.FunctionCallResponse{Result: []byte("3"), WorkerId: "w"}},
		{Id: 9, Code: 3, Message: "m", NotRun: true},
	} {
		b, _ := proto.Marshal(r)
		f.Add(b)
	}
	f.Fuzz(func(t *testing.T, b []byte) {
		var r rawReply
		if r.unmarshal(b) != nil {
			return
		}
		var want v1.CallReply
		if err := proto.Unmarshal(b, &want); err != nil {
			t.Fatalf("rawReply accepted %x, protobuf refuses it: %v", b, err)
		}
		if r.id != want.Id || r.code != want.Code || r.message != want.Message || r.notRun != want.NotRun {
			t.Fatalf("%x: read %+v, protobuf %v", b, r, &want)
		}
		if r.response == nil {
			if want.Response != nil {
				t.Fatalf("%x: no response read, protobuf has %v", b, want.Response)
			}
			return
		}
		got, err := (&answer{raw: r.response}).decode()
		if err != nil || !proto.Equal(got, want.Response) {
			t.Fatalf("%x: response %v (%v), protobuf %v", b, got, err, want.Response)
		}
	})
}

// lyingWorker answers every call frame with the bytes reply(id) makes, over
// real gRPC: a worker that sends what it likes.
type lyingWorker struct {
	v1.UnimplementedRPCServiceServer
	reply func(id uint64) []byte
}

func (w *lyingWorker) CallStream(stream v1.RPCService_CallStreamServer) error {
	for {
		f, err := stream.Recv()
		if err == io.EOF {
			return nil
		}
		if err != nil {
			return err
		}
		if err := stream.SendMsg(&answer{raw: w.reply(f.Id)}); err != nil {
			return err
		}
	}
}

// TestMuxRefusesMalformedAnswer: a worker's well-formed answer reaches the
// caller as its bytes; a malformed one is never forwarded: its stream is
// dropped as broken, the call failing as one whose worker broke.
func TestMuxRefusesMalformedAnswer(t *testing.T) {
	reply := func(response []byte) func(uint64) []byte {
		return func(id uint64) []byte {
			b := protowire.AppendVarint(protowire.AppendTag(nil, replyID, protowire.VarintType), id)
			return protowire.AppendBytes(protowire.AppendTag(b, replyResponse, protowire.BytesType), response)
		}
	}
	good, _ := proto.Marshal(&v1.FunctionCallResponse{Result: []byte("3"), WorkerId: "w"})
	tests := []struct {
		name     string
		response []byte
		code     codes.Code
	}{
		{"well formed", good, codes.OK},
		{"result as a varint", []byte{0x08, 0x01}, codes.Unavailable},
		{"worker_id not UTF-8", []byte{0x12, 0x01, 0xff}, codes.Unavailable},
		{"truncated", good[:len(good)-1], codes.Unavailable},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			lis, err := net.Listen("tcp", "127.0.0.1:0")
			if err != nil {
				t.Fatal(err)
			}
			s := grpc.NewServer(grpc.ForceServerCodecV2(codec))
			v1.RegisterRPCServiceServer(s, &lyingWorker{reply: reply(tt.response)})
			go func() { _ = s.Serve(lis) }()
			t.Cleanup(s.Stop)
			conn, err := grpc.NewClient(lis.Addr().String(), grpc.WithTransportCredentials(insecure.NewCredentials()))
			if err != nil {
				t.Fatal(err)
			}
			t.Cleanup(func() { conn.Close() })
			m := &callMux{client: v1.NewRPCServiceClient(conn)}
			t.Cleanup(m.close)
			ctx, cancel := context.WithTimeout(context.Background(), 30*time.Second)
			defer cancel()
			a, err, reached := m.call(ctx, &v1.FunctionCallRequest{FunctionName: "add", Args: []byte("[1,2]")})
			if status.Code(err) != tt.code {
				t.Fatalf("got %v (reached %v); want %s", err, reached, tt.code)
			}
			if tt.code != codes.OK {
				if reached || !strings.Contains(err.Error(), "broke") {
					t.Errorf("got %v, reached %v; want the stream broken, not the worker's answer", err, reached)
				}
				return
			}
			if string(a.raw) != string(good) {
				t.Errorf("forwarded %x; the worker sent %x", a.raw, good)
			}
		})
	}
}
