package shardserver

import (
	"bytes"
	"fmt"
	"testing"

	"google.golang.org/protobuf/proto"

	v1 "github.com/hivemind/taskworker/api/taskworker/v1"
	"github.com/hivemind/taskworker/internal/wirefields"
)

// GetShard's answers are encoded as proto encodes them, at every size
// around the by-reference threshold, and a large one refers to the
// shard's bytes rather than a copy.
func TestAnswerCodecIsProto(t *testing.T) {
	codec := answers // ServerOption's
	for _, n := range []int{0, 1, wirefields.ByReferenceMin - 1, wirefields.ByReferenceMin, getChunk} {
		t.Run(fmt.Sprintf("%d bytes", n), func(t *testing.T) {
			msg := &v1.GetShardResponse{Data: bytes.Repeat([]byte{byte(n)}, n)}
			want, err := proto.Marshal(msg)
			if err != nil {
				t.Fatal(err)
			}
			got, err := codec.Marshal(msg)
			if err != nil {
				t.Fatal(err)
			}
			if !bytes.Equal(got.Materialize(), want) {
				t.Fatalf("encoded %d bytes unlike proto's %d", got.Len(), len(want))
			}
			var back v1.GetShardResponse
			if err := codec.Unmarshal(got, &back); err != nil || !proto.Equal(&back, msg) {
				t.Fatalf("decoded %d bytes (%v), want the message sent", len(back.Data), err)
			}
			if n >= wirefields.ByReferenceMin {
				last := got[len(got)-1].ReadOnlyData()
				if len(got) != 2 || &last[0] != &msg.Data[0] {
					t.Fatalf("a %d-byte answer was copied into the message (%d buffers)", n, len(got))
				}
			}
		})
	}
}
