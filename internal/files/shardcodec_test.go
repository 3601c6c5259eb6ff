package files

import (
	"bytes"
	"fmt"
	"testing"

	"google.golang.org/protobuf/proto"

	v1 "github.com/hivemind/taskworker/api/taskworker/v1"
)

// The shard codec's bytes are the proto encoding's, for data messages of
// every size around its threshold and for the key message, and a large
// data message refers to the shard's own bytes rather than a copy.
func TestShardCodecIsProto(t *testing.T) {
	c := putShardCodec.CodecV2.(shardCodec)
	msgs := []*v1.PutShardRequest{
		{Part: &v1.PutShardRequest_Key{Key: &v1.ShardKey{FileId: "f", WriteId: "w", Block: 7, Shard: 3}}},
	}
	for _, n := range []int{0, 1, 127, 128, zeroCopyMin - 1, zeroCopyMin, zeroCopyMin + 1, 1 << 20, 2<<20 + 7} {
		data := bytes.Repeat([]byte{byte(n)}, n)
		msgs = append(msgs, &v1.PutShardRequest{Part: &v1.PutShardRequest_Data{Data: data}})
	}
	for _, msg := range msgs {
		name := fmt.Sprintf("%d bytes", len(msg.GetData()))
		if msg.GetKey() != nil {
			name = "key"
		}
		t.Run(name, func(t *testing.T) {
			want, err := proto.Marshal(msg)
			if err != nil {
				t.Fatal(err)
			}
			got, err := c.Marshal(msg)
			if err != nil {
				t.Fatal(err)
			}
			if !bytes.Equal(got.Materialize(), want) {
				t.Fatalf("encoded %d bytes unlike proto's %d", got.Len(), len(want))
			}
			var back v1.PutShardRequest
			if err := c.Unmarshal(got, &back); err != nil || !proto.Equal(&back, msg) {
				t.Fatalf("decoded %v (%v), want the message sent", &back, err)
			}
			if data := msg.GetData(); len(data) >= zeroCopyMin {
				last := got[len(got)-1].ReadOnlyData()
				if len(got) != 2 || &last[0] != &data[0] {
					t.Fatalf("a %d-byte shard was copied into the message (%d buffers)", len(data), len(got))
				}
			}
		})
	}
}
