// Package wirefields decodes the messages that carry bulk bytes (a
// shard, a chunk of a file) field by field, straight from gRPC's receive
// buffers: a bytes field reaches its consumer with one copy, where gRPC's
// proto codec makes two more (the message materialized into one buffer,
// then the field copied out of it into the decoded message).
//
// A message type opts in by implementing Message; Codec decodes every
// other message as gRPC's proto codec does, and encodes every message as
// it does, so the bytes on the wire do not change.
//
// # Caveats
//
// A Message sees a field's bytes as they are decoded, before the rest of
// its message: a message that turns out malformed after a bytes field was
// consumed fails with the field already delivered. Groups (a deprecated
// wire type) are refused.
package wirefields

import (
	"encoding/binary"
	"fmt"
	"io"

	"google.golang.org/grpc"
	"google.golang.org/grpc/encoding"
	"google.golang.org/grpc/encoding/proto"
	"google.golang.org/grpc/mem"
	"google.golang.org/protobuf/encoding/protowire"
)

// Message is a message decoded field by field.
type Message interface {
	// BeginMessage is called before each message is decoded into it.
	BeginMessage()
	// BytesField is called for each field of the bytes wire type (bytes,
	// strings, embedded messages), in the order they come, with the
	// field's number, its length and its bytes, valid only during the
	// call; what it leaves unread is skipped. Fields of other wire types
	// are skipped. An error ends the decoding.
	BytesField(num protowire.Number, n int, f *Field) error
}

// Codec is gRPC's proto codec, but for the values that implement Message.
type Codec struct{ encoding.CodecV2 }

// NewCodec returns a Codec over gRPC's proto codec.
func NewCodec() Codec { return Codec{encoding.GetCodecV2(proto.Name)} }

// CallOption makes a call use NewCodec.
func CallOption() grpc.CallOption { return grpc.ForceCodecV2(NewCodec()) }

// Name is the proto codec's: nothing changes on the wire.
func (c Codec) Name() string { return proto.Name }

// Unmarshal decodes data into v: field by field for a Message.
func (c Codec) Unmarshal(data mem.BufferSlice, v any) error {
	if m, ok := v.(Message); ok {
		return Decode(data, m)
	}
	return c.CodecV2.Unmarshal(data, v)
}

// Decode walks the fields of the encoded message in data, handing m its
// bytes fields. It refuses what the proto codec refuses.
func Decode(data mem.BufferSlice, m Message) error {
	rd := &reader{}
	for _, b := range data {
		if d := b.ReadOnlyData(); len(d) > 0 {
			rd.bufs = append(rd.bufs, d)
		}
		rd.left += b.Len()
	}
	m.BeginMessage()
	for rd.left > 0 {
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
			if err != nil || n > uint64(rd.left) {
				return malformed("a length past the message's end")
			}
			field := &Field{rd: rd, left: int(n)}
			if err := m.BytesField(num, int(n), field); err != nil {
				return err
			}
			skip = uint64(field.left)
		default:
			return malformed(fmt.Sprintf("wire type %d", typ))
		}
		if skip > uint64(rd.left) {
			return malformed("a field past the message's end")
		}
		rd.skip(int(skip))
	}
	return nil
}

// reader reads a message's bytes from gRPC's buffers, in place.
type reader struct {
	bufs [][]byte // what is left, the first maybe partly read
	left int
}

func (r *reader) ReadByte() (byte, error) {
	if r.left == 0 {
		return 0, io.ErrUnexpectedEOF
	}
	c := r.bufs[0][0]
	r.advance(1)
	return c, nil
}

// next returns up to n bytes from the front, in place, and moves past
// them.
func (r *reader) next(n int) []byte {
	b := r.bufs[0]
	b = b[:min(n, len(b))]
	r.advance(len(b))
	return b
}

func (r *reader) advance(n int) {
	r.left -= n
	if r.bufs[0] = r.bufs[0][n:]; len(r.bufs[0]) == 0 {
		r.bufs = r.bufs[1:]
	}
}

func (r *reader) skip(n int) {
	for n > 0 {
		n -= len(r.next(n))
	}
}

// Field is the reader of a bytes field's bytes, in gRPC's buffers. Its
// WriteTo hands them to a writer without copying them first.
type Field struct {
	rd   *reader
	left int
}

func (f *Field) Read(p []byte) (int, error) {
	if f.left == 0 {
		return 0, io.EOF
	}
	n := 0
	for n < len(p) && f.left > 0 {
		c := copy(p[n:], f.rd.next(min(len(p)-n, f.left)))
		n += c
		f.left -= c
	}
	return n, nil
}

// WriteTo writes what is left of the field to w.
func (f *Field) WriteTo(w io.Writer) (int64, error) {
	var written int64
	for f.left > 0 {
		b := f.rd.next(f.left)
		f.left -= len(b)
		n, err := w.Write(b)
		written += int64(n)
		if err != nil {
			return written, err
		}
	}
	return written, nil
}

// ErrMalformed is the error of bytes that are not a message.
var ErrMalformed = fmt.Errorf("wirefields: a malformed message")

func malformed(what string) error { return fmt.Errorf("%w: %s", ErrMalformed, what) }
