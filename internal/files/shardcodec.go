package files

import (
	"google.golang.org/grpc"
	"google.golang.org/grpc/encoding"
	"google.golang.org/grpc/encoding/proto"
	"google.golang.org/grpc/mem"
	"google.golang.org/protobuf/encoding/protowire"

	v1 "github.com/hivemind/taskworker/api/taskworker/v1"
)

// shardCodec is the proto codec, but for the data messages of PutShard:
// those it encodes as the field's tag and length followed by the shard's
// own bytes, not a copy of them, so that a shard goes from the buffer it
// was coded in to gRPC's frames with no marshalled copy (and no zeroed
// buffer from gRPC's pool to copy into). The bytes on the wire are the
// proto encoding's (TestShardCodecIsProto); the worker decodes them with
// the plain proto codec.
//
// gRPC reads the shard's bytes after Send returns, until the stream is
// done with them: the caller must not change them before CloseAndRecv has
// returned OK, and after a stream failed, not at all (see putBlock).
type shardCodec struct{ encoding.CodecV2 }

// zeroCopyMin is the smallest data message sent without a copy; below it
// the copy costs less than a second buffer in the frame.
const zeroCopyMin = 16 << 10

// putShardCodec is the call option that sends PutShard with shardCodec.
var putShardCodec = grpc.ForceCodecV2CallOption{CodecV2: shardCodec{encoding.GetCodecV2(proto.Name)}}

// putShardDataField is the field number of PutShardRequest.data.
const putShardDataField = 2

func (c shardCodec) Marshal(v any) (mem.BufferSlice, error) {
	if req, ok := v.(*v1.PutShardRequest); ok {
		if d, ok := req.Part.(*v1.PutShardRequest_Data); ok && len(d.Data) >= zeroCopyMin {
			head := protowire.AppendTag(make([]byte, 0, 11), putShardDataField, protowire.BytesType)
			head = protowire.AppendVarint(head, uint64(len(d.Data)))
			return mem.BufferSlice{mem.SliceBuffer(head), mem.SliceBuffer(d.Data)}, nil
		}
	}
	return c.CodecV2.Marshal(v)
}

func (c shardCodec) Name() string { return proto.Name }
