package files

import (
	"bytes"
	"encoding/binary"
	"fmt"
	"strings"
	"testing"

	"google.golang.org/grpc/mem"
	"google.golang.org/protobuf/encoding/protowire"
	"google.golang.org/protobuf/proto"

	v1 "github.com/hivemind/taskworker/api/taskworker/v1"
	"github.com/hivemind/taskworker/internal/wirefields"
)

// The shard codec's bytes are the proto encoding's, for data messages of
// every size around its threshold and for the key message, and a large
// data message refers to the shard's own bytes rather than a copy.
func TestShardCodecIsProto(t *testing.T) {
	c := shardCodecOption.CodecV2.(shardCodec)
	msgs := []*v1.PutShardRequest{
		{Part: &v1.PutShardRequest_Key{Key: &v1.ShardKey{FileId: "f", WriteId: "w", Block: 7, Shard: 3}}},
	}
	for _, n := range []int{0, 1, 127, 128, wirefields.ByReferenceMin - 1, wirefields.ByReferenceMin, wirefields.ByReferenceMin + 1, 1 << 20, 2<<20 + 7} {
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
			if data := msg.GetData(); len(data) >= wirefields.ByReferenceMin {
				last := got[len(got)-1].ReadOnlyData()
				if len(got) != 2 || &last[0] != &data[0] {
					t.Fatalf("a %d-byte shard was copied into the message (%d buffers)", len(data), len(got))
				}
			}
		})
	}
}

// split cuts b into a BufferSlice at the given cut points, as gRPC's
// receive buffers may cut a message anywhere.
func split(b []byte, cuts ...int) mem.BufferSlice {
	var s mem.BufferSlice
	last := 0
	for _, c := range cuts {
		c = min(max(c, last), len(b))
		s = append(s, mem.SliceBuffer(b[last:c]))
		last = c
	}
	return append(s, mem.SliceBuffer(b[last:]))
}

// A GetShard answer decodes into a shardReader as the proto codec decodes
// it, wherever gRPC's buffers cut it; a worker that sends more than the
// shard's length, two data fields in one answer (proto would keep the
// last), or bytes that are not a GetShardResponse, fails.
func TestShardReaderDecodesAsProto(t *testing.T) {
	c := shardCodecOption.CodecV2.(shardCodec)
	msg := func(n int) []byte {
		b, _ := proto.Marshal(&v1.GetShardResponse{Data: bytes.Repeat([]byte{byte(n)}, n)})
		return b
	}
	unknown := protowire.AppendTag(nil, 7, protowire.BytesType)
	unknown = protowire.AppendBytes(unknown, []byte("later field"))
	unknown = protowire.AppendTag(unknown, 8, protowire.VarintType)
	unknown = protowire.AppendVarint(unknown, 300)
	unknown = protowire.AppendTag(unknown, 9, protowire.Fixed64Type)
	unknown = binary.LittleEndian.AppendUint64(unknown, 1)
	for _, tc := range []struct {
		name    string
		wire    []byte
		cap     int
		want    []byte // nil: an error
		wantErr string
	}{
		{"empty", nil, 8, []byte{}, ""},
		{"small", msg(5), 8, bytes.Repeat([]byte{5}, 5), ""},
		{"two frames' worth", msg(40 << 10), 40 << 10, bytes.Repeat([]byte{0}, 40<<10), ""},
		{"unknown fields around", append(append(append([]byte{}, unknown...), msg(3)...), unknown...), 8, []byte{3, 3, 3}, ""},
		{"two data fields", append(msg(4), msg(2)...), 8, nil, "two data fields"},
		{"more than the shard", msg(9), 8, nil, "more than the shard's 8 bytes"},
		{"a length past the end", msg(9)[:5], 16, nil, "malformed"},
		{"a truncated tag", []byte{0x80}, 8, nil, "malformed"},
		{"field 0", []byte{0x02, 0x00}, 8, nil, "malformed"},
		{"a group", []byte{0x0b, 0x0c}, 8, nil, "malformed"},
	} {
		for _, cut := range []int{0, 1, 2, 3, 100, 16 << 10} {
			t.Run(fmt.Sprintf("%s cut at %d", tc.name, cut), func(t *testing.T) {
				var protoMsg v1.GetShardResponse
				protoErr := proto.Unmarshal(tc.wire, &protoMsg)
				r := shardReader{buf: make([]byte, 0, tc.cap)}
				err := c.Unmarshal(split(tc.wire, cut, cut+5), &r)
				switch {
				case tc.want == nil:
					if err == nil || !strings.Contains(err.Error(), tc.wantErr) {
						t.Fatalf("decoded %d bytes (%v); want an error saying %q", len(r.buf), err, tc.wantErr)
					}
				case err != nil || !bytes.Equal(r.buf, tc.want):
					t.Fatalf("decoded %d bytes (%v); want %d", len(r.buf), err, len(tc.want))
				case protoErr != nil || !bytes.Equal(protoMsg.Data, r.buf):
					t.Fatalf("proto decodes %d bytes (%v), the shard reader %d", len(protoMsg.Data), protoErr, len(r.buf))
				}
			})
		}
	}
}

// What the shard reader accepts, proto accepts with the same data; what
// proto refuses, the shard reader refuses (it may refuse more: two data
// fields in one answer).
func FuzzShardReader(f *testing.F) {
	full, _ := proto.Marshal(&v1.GetShardResponse{Data: []byte("shard bytes")})
	f.Add(full, 3)
	f.Add([]byte{0x0a, 0x80}, 1)
	f.Add(append([]byte{0x3a, 0x01, 0x00}, full...), 2)
	f.Fuzz(func(t *testing.T, wire []byte, cut int) {
		var m v1.GetShardResponse
		protoErr := proto.Unmarshal(wire, &m)
		r := shardReader{buf: make([]byte, 0, len(wire))}
		err := shardCodecOption.CodecV2.Unmarshal(split(wire, cut), &r)
		switch {
		case err == nil && (protoErr != nil || !bytes.Equal(m.Data, r.buf)):
			t.Fatalf("the shard reader decoded %q, proto %q (%v)", r.buf, m.Data, protoErr)
		case protoErr != nil && err == nil:
			t.Fatalf("proto refused (%v), the shard reader did not", protoErr)
		}
	})
}
