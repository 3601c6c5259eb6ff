package files

import (
	"encoding/binary"
	"fmt"
	"io"

	"google.golang.org/grpc"
	"google.golang.org/grpc/encoding"
	"google.golang.org/grpc/encoding/proto"
	"google.golang.org/grpc/mem"
	"google.golang.org/protobuf/encoding/protowire"

	v1 "github.com/hivemind/taskworker/api/taskworker/v1"
)

// shardCodec is the proto codec, but for the data messages of PutShard
// and GetShard. A PutShard data message it encodes as the field's tag and
// length followed by the shard's own bytes, not a copy of them, so that a
// shard goes from the buffer it was coded in to gRPC's frames with no
// marshalled copy (and no zeroed buffer from gRPC's pool to copy into). A
// GetShard answer it decodes into a shardReader, straight from gRPC's
// receive buffers into the shard's. The bytes on the wire are the proto
// encoding's (TestShardCodecIsProto); the worker uses the plain proto
// codec.
//
// gRPC reads the shard's bytes after Send returns, until the stream is
// done with them: the caller must not change them before CloseAndRecv has
// returned OK, and after a stream failed, not at all (see putBlock).
type shardCodec struct{ encoding.CodecV2 }

// zeroCopyMin is the smallest data message sent without a copy; below it
// the copy costs less than a second buffer in the frame.
const zeroCopyMin = 16 << 10

// shardCodecOption is the call option that sends PutShard and reads
// GetShard with shardCodec.
var shardCodecOption = grpc.ForceCodecV2CallOption{CodecV2: shardCodec{encoding.GetCodecV2(proto.Name)}}

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

func (c shardCodec) Unmarshal(data mem.BufferSlice, v any) error {
	if r, ok := v.(*shardReader); ok {
		return r.unmarshal(data)
	}
	return c.CodecV2.Unmarshal(data, v)
}

func (c shardCodec) Name() string { return proto.Name }

// getShardDataField is the field number of GetShardResponse.data.
const getShardDataField = 1

// shardReader reads a shard from GetShard's answers (with shardCodec):
// each message's data is appended to buf as it is decoded, so that the
// bytes are copied once, from gRPC's receive buffers, rather than into a
// whole message, then into its decoded field, then into buf. A worker that
// sends more than the shard's length (cap of buf) sent a bad shard.
type shardReader struct{ buf []byte }

// unmarshal decodes one GetShardResponse as the proto codec would (of
// several data fields the last wins; other fields are skipped), appending
// its data to r.buf.
func (r *shardReader) unmarshal(data mem.BufferSlice) error {
	rd := data.Reader()
	defer rd.Close()
	start := len(r.buf)
	malformed := func(what string) error {
		return fmt.Errorf("a malformed GetShard answer: %s", what)
	}
	for rd.Remaining() > 0 {
		tag, err := binary.ReadUvarint(rd)
		if err != nil {
			return malformed("a truncated tag")
		}
		num, typ := protowire.DecodeTag(tag)
		if !num.IsValid() {
			return malformed(fmt.Sprintf("field number %d", num))
		}
		var skip uint64
		switch typ {
		case protowire.VarintType:
			if _, err := binary.ReadUvarint(rd); err != nil {
				return malformed("a truncated varint")
			}
		case protowire.Fixed32Type:
			skip = 4
		case protowire.Fixed64Type:
			skip = 8
		case protowire.BytesType:
			n, err := binary.ReadUvarint(rd)
			if err != nil || n > uint64(rd.Remaining()) {
				return malformed("a length past the message's end")
			}
			if num != getShardDataField {
				skip = n
				break
			}
			r.buf = r.buf[:start]
			if n > uint64(cap(r.buf)-start) {
				return fmt.Errorf("the worker sent more than the shard's %d bytes", cap(r.buf))
			}
			end := start + int(n)
			if _, err := io.ReadFull(rd, r.buf[start:end]); err != nil {
				return malformed("a truncated field")
			}
			r.buf = r.buf[:end]
		default:
			return malformed(fmt.Sprintf("wire type %d", typ))
		}
		if skip > uint64(rd.Remaining()) {
			return malformed("a field past the message's end")
		}
		if _, err := io.CopyN(io.Discard, rd, int64(skip)); err != nil {
			return malformed("a truncated field")
		}
	}
	return nil
}
