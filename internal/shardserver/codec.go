package shardserver

import (
	"google.golang.org/grpc"
	"google.golang.org/grpc/encoding"
	"google.golang.org/grpc/encoding/proto"
	"google.golang.org/grpc/mem"

	v1 "github.com/hivemind/taskworker/api/taskworker/v1"
	"github.com/hivemind/taskworker/internal/wirefields"
)

// getShardDataField is the field number of GetShardResponse.data.
const getShardDataField = 1

// answerCodec is gRPC's proto codec, but for GetShard's answers: their
// bytes go to gRPC's frames by reference (wirefields.BytesMessage), not
// copied into a zeroed buffer from gRPC's pool first. The bytes on the
// wire are the proto encoding's (TestAnswerCodecIsProto). It is safe
// because GetShard answers from a shard it read for that call alone and
// never changes.
type answerCodec struct{ encoding.CodecV2 }

func (c answerCodec) Marshal(v any) (mem.BufferSlice, error) {
	if a, ok := v.(*v1.GetShardResponse); ok && len(a.Data) >= wirefields.ByReferenceMin {
		return wirefields.BytesMessage(getShardDataField, a.Data), nil
	}
	return c.CodecV2.Marshal(v)
}

func (c answerCodec) Name() string { return proto.Name }

// ServerOption is the option a gRPC server that serves the ShardService
// needs so that GetShard sends shards without copying them. Every other
// message is encoded and decoded as gRPC's proto codec does.
func ServerOption() grpc.ServerOption { return grpc.ForceServerCodecV2(answers) }

var answers = answerCodec{encoding.GetCodecV2(proto.Name)}
