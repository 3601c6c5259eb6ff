package wirefields

import (
	"encoding/binary"

	"google.golang.org/grpc/mem"
	"google.golang.org/protobuf/encoding/protowire"
)

// ByReferenceMin is the smallest bytes field worth sending by reference
// (BytesMessage): below it, copying the bytes costs less than a second
// buffer in the frame.
const ByReferenceMin = 16 << 10

// BytesMessage encodes a message whose one field is bytes field num
// holding data, exactly as proto encodes it, but as two buffers: the
// field's tag and length, then data itself rather than a copy in a zeroed
// buffer from gRPC's pool. It is for a codec's Marshal.
//
// gRPC reads data after Send returns, while it frames it: data must not
// change until the stream is done with it.
func BytesMessage(num protowire.Number, data []byte) mem.BufferSlice {
	head := protowire.AppendTag(make([]byte, 0, 2*binary.MaxVarintLen64), num, protowire.BytesType)
	head = protowire.AppendVarint(head, uint64(len(data)))
	return mem.BufferSlice{mem.SliceBuffer(head), mem.SliceBuffer(data)}
}
