package files

import (
	"fmt"
	"io"

	"google.golang.org/grpc"
	"google.golang.org/grpc/encoding/proto"
	"google.golang.org/grpc/mem"
	"google.golang.org/protobuf/encoding/protowire"

	v1 "github.com/hivemind/taskworker/api/taskworker/v1"
	"github.com/hivemind/taskworker/internal/wirefields"
)

// shardCodec is the proto codec, but for the data messages of PutShard
// and GetShard. A PutShard data message it encodes as the field's tag and
// length followed by the shard's own bytes, not a copy of them, so that a
// shard goes from the buffer it was coded in to gRPC's frames with no
// marshalled copy (and no zeroed buffer from gRPC's pool to copy into). A
// GetShard answer it decodes into a shardReader (wirefields), straight
// from gRPC's receive buffers into the shard's. The bytes on the wire are the proto
// encoding's (TestShardCodecIsProto); the worker's side is
// shardserver.ServerOption.
//
// gRPC reads the shard's bytes after Send returns, until the stream is
// done with them: the caller must not change them before CloseAndRecv has
// returned OK, and after a stream failed, not at all (see putBlock).
type shardCodec struct{ wirefields.Codec }

// shardCodecOption is the call option that sends PutShard and reads
// GetShard with shardCodec.
var shardCodecOption = grpc.ForceCodecV2CallOption{CodecV2: shardCodec{wirefields.NewCodec()}}

// putShardDataField is the field number of PutShardRequest.data.
const putShardDataField = 2

func (c shardCodec) Marshal(v any) (mem.BufferSlice, error) {
	if req, ok := v.(*v1.PutShardRequest); ok {
		if d, ok := req.Part.(*v1.PutShardRequest_Data); ok && len(d.Data) >= wirefields.ByReferenceMin {
			return wirefields.BytesMessage(putShardDataField, d.Data), nil
		}
	}
	return c.Codec.Marshal(v)
}

func (c shardCodec) Name() string { return proto.Name }

// getShardDataField is the field number of GetShardResponse.data.
const getShardDataField = 1

// shardReader reads a shard from GetShard's answers (a wirefields.Message):
// each message's data is appended to buf as it is decoded, so that the
// bytes are copied once, from gRPC's receive buffers, rather than into a
// whole message, then into its decoded field, then into buf. A worker that
// sends more than the shard's length (cap of buf), or two data fields in
// one message, sent a bad shard.
type shardReader struct {
	buf  []byte
	seen bool // a data field in the message being decoded
}

// BeginMessage prepares for the next answer.
func (r *shardReader) BeginMessage() { r.seen = false }

// BytesField appends a data field to r.buf.
func (r *shardReader) BytesField(num protowire.Number, n int, f *wirefields.Field) error {
	if num != getShardDataField {
		return nil
	}
	if r.seen {
		return fmt.Errorf("%w: two data fields in one GetShard answer", wirefields.ErrMalformed)
	}
	r.seen = true
	start := len(r.buf)
	if n > cap(r.buf)-start {
		return fmt.Errorf("the worker sent more than the shard's %d bytes", cap(r.buf))
	}
	r.buf = r.buf[:start+n]
	if _, err := io.ReadFull(f, r.buf[start:]); err != nil {
		return fmt.Errorf("%w: a truncated field", wirefields.ErrMalformed)
	}
	return nil
}
