package pool

import (
	"errors"
	"fmt"
	"unicode/utf8"

	"google.golang.org/grpc/encoding"
	protocodec "google.golang.org/grpc/encoding/proto"
	"google.golang.org/grpc/mem"
	"google.golang.org/protobuf/encoding/protowire"
	"google.golang.org/protobuf/proto"

	v1 "github.com/hivemind/taskworker/api/taskworker/v1"
)

// forwardingCodec is gRPC's protobuf codec, but for the two messages of a
// call's answer that the pool only forwards: a worker's CallReply is read
// without decoding the FunctionCallResponse inside it (rawReply), and those
// bytes are written to the caller as they came (answer). Every other
// message goes to the protobuf codec. The pool's server and its workers'
// call streams use it (RATIONALE.md, "What does the pool hop cost, and what
// did it save?").
type forwardingCodec struct{ proto encoding.CodecV2 }

var codec = forwardingCodec{proto: encoding.GetCodecV2(protocodec.Name)}

// Name is the protobuf codec's: on the wire nothing changes.
func (c forwardingCodec) Name() string { return protocodec.Name }

func (c forwardingCodec) Marshal(v any) (mem.BufferSlice, error) {
	if a, ok := v.(*answer); ok {
		if a.msg != nil {
			return c.proto.Marshal(a.msg)
		}
		return mem.BufferSlice{mem.SliceBuffer(a.raw)}, nil
	}
	return c.proto.Marshal(v)
}

func (c forwardingCodec) Unmarshal(data mem.BufferSlice, v any) error {
	if r, ok := v.(*rawReply); ok {
		return r.unmarshal(data.Materialize())
	}
	return c.proto.Unmarshal(data, v)
}

// answer is a worker's FunctionCallResponse: as the worker encoded it on
// the call stream (raw, checked by checkResponse), or decoded (msg: from a
// unary call, or one the pool added to).
type answer struct {
	raw []byte
	msg *v1.FunctionCallResponse
}

// decode returns the response as a message, for the pool's own callers
// (tasks) and for answers it adds to (result_json).
func (a *answer) decode() (*v1.FunctionCallResponse, error) {
	if a.msg != nil {
		return a.msg, nil
	}
	resp := &v1.FunctionCallResponse{}
	if err := proto.Unmarshal(a.raw, resp); err != nil {
		return nil, fmt.Errorf("the worker's answer: %w", err)
	}
	return resp, nil
}

// rawReply is a CallReply whose response is kept encoded.
type rawReply struct {
	id       uint64
	response []byte // an encoded FunctionCallResponse; nil: none
	code     int32
	message  string
	notRun   bool
	// answer is where the call's answer is handed on from, saving an
	// allocation per call.
	answer answer
}

// The field numbers of CallReply and FunctionCallResponse, which
// TestRawReplyMatchesCallReply checks against the generated code.
const (
	replyID       protowire.Number = 1
	replyResponse protowire.Number = 2
	replyCode     protowire.Number = 3
	replyMessage  protowire.Number = 4
	replyNotRun   protowire.Number = 5

	responseResult     protowire.Number = 1
	responseWorkerID   protowire.Number = 2
	responseResultJSON protowire.Number = 3
)

var errMalformed = errors.New("malformed protobuf")

// unmarshal reads a CallReply: its scalar fields, and its response as the
// bytes they are, after checking them (checkResponse). Unknown fields are
// skipped, as protobuf does.
func (r *rawReply) unmarshal(b []byte) error {
	*r = rawReply{}
	for len(b) > 0 {
		num, typ, n := protowire.ConsumeTag(b)
		if n < 0 || !num.IsValid() {
			return fmt.Errorf("CallReply: %w", errMalformed)
		}
		b = b[n:]
		switch {
		case num == replyID && typ == protowire.VarintType:
			v, n := protowire.ConsumeVarint(b)
			if n < 0 {
				return fmt.Errorf("CallReply.id: %w", errMalformed)
			}
			r.id, b = v, b[n:]
		case num == replyResponse && typ == protowire.BytesType:
			v, n := protowire.ConsumeBytes(b)
			if n < 0 {
				return fmt.Errorf("CallReply.response: %w", errMalformed)
			}
			if err := checkResponse(v); err != nil {
				return fmt.Errorf("CallReply.response: %w", err)
			}
			// A message field seen twice is merged; concatenating the
			// encodings is that merge.
			if r.response == nil {
				r.response = v
			} else {
				r.response = append(r.response[:len(r.response):len(r.response)], v...)
			}
			b = b[n:]
		case num == replyCode && typ == protowire.VarintType:
			v, n := protowire.ConsumeVarint(b)
			if n < 0 {
				return fmt.Errorf("CallReply.code: %w", errMalformed)
			}
			r.code, b = int32(v), b[n:]
		case num == replyMessage && typ == protowire.BytesType:
			v, n := protowire.ConsumeBytes(b)
			if n < 0 {
				return fmt.Errorf("CallReply.message: %w", errMalformed)
			}
			if !utf8.Valid(v) {
				return fmt.Errorf("CallReply.message is not UTF-8: %w", errMalformed)
			}
			r.message, b = string(v), b[n:]
		case num == replyNotRun && typ == protowire.VarintType:
			v, n := protowire.ConsumeVarint(b)
			if n < 0 {
				return fmt.Errorf("CallReply.not_run: %w", errMalformed)
			}
			r.notRun, b = v != 0, b[n:]
		default:
			n := protowire.ConsumeFieldValue(num, typ, b)
			if n < 0 {
				return fmt.Errorf("CallReply field %d: %w", num, errMalformed)
			}
			b = b[n:]
		}
	}
	return nil
}

// checkResponse checks that b is a well-formed FunctionCallResponse whose
// known fields have their types, so that what the pool forwards unread
// decodes at the caller as it would have at the pool. Its strings must be
// UTF-8, as protobuf requires of proto3 strings.
func checkResponse(b []byte) error {
	for len(b) > 0 {
		num, typ, n := protowire.ConsumeTag(b)
		if n < 0 || !num.IsValid() {
			return errMalformed
		}
		b = b[n:]
		switch num {
		case responseResult, responseWorkerID, responseResultJSON:
			if typ != protowire.BytesType {
				return fmt.Errorf("field %d has wire type %d: %w", num, typ, errMalformed)
			}
			v, n := protowire.ConsumeBytes(b)
			if n < 0 {
				return errMalformed
			}
			if num != responseResult && !utf8.Valid(v) {
				return fmt.Errorf("field %d is not UTF-8: %w", num, errMalformed)
			}
			b = b[n:]
		default:
			n := protowire.ConsumeFieldValue(num, typ, b)
			if n < 0 {
				return errMalformed
			}
			b = b[n:]
		}
	}
	return nil
}
