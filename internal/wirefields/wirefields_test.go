package wirefields

import (
	"bytes"
	"encoding/binary"
	"fmt"
	"io"
	"testing"

	"google.golang.org/grpc/mem"
	"google.golang.org/protobuf/encoding/protowire"
)

// recorder keeps every bytes field it is handed, reading some through
// Read and the others through WriteTo, and leaving field 9 unread.
type recorder struct {
	messages int
	fields   []string
}

func (r *recorder) BeginMessage() { r.messages++ }

func (r *recorder) BytesField(num protowire.Number, n int, f *Field) error {
	var b bytes.Buffer
	switch num {
	case 9:
		r.fields = append(r.fields, fmt.Sprintf("%d:skipped %d", num, n))
		return nil
	case 1:
		if _, err := f.WriteTo(&b); err != nil {
			return err
		}
	default:
		if _, err := io.Copy(&b, struct{ io.Reader }{f}); err != nil {
			return err
		}
	}
	r.fields = append(r.fields, fmt.Sprintf("%d:%s", num, b.String()))
	return nil
}

// cut splits b into buffers at every step bytes, as gRPC's receive
// buffers may.
func cut(b []byte, step int) mem.BufferSlice {
	var s mem.BufferSlice
	for len(b) > step {
		s = append(s, mem.SliceBuffer(b[:step]))
		b = b[step:]
	}
	return append(s, mem.SliceBuffer(b))
}

// Decode hands over every bytes field, whole and in order, and skips the
// other wire types and what a field's consumer leaves unread, wherever the
// buffers cut the message.
func TestDecode(t *testing.T) {
	var msg []byte
	msg = protowire.AppendTag(msg, 1, protowire.BytesType)
	msg = protowire.AppendBytes(msg, bytes.Repeat([]byte("a"), 300))
	msg = protowire.AppendTag(msg, 2, protowire.VarintType)
	msg = protowire.AppendVarint(msg, 1<<40)
	msg = protowire.AppendTag(msg, 3, protowire.Fixed32Type)
	msg = binary.LittleEndian.AppendUint32(msg, 7)
	msg = protowire.AppendTag(msg, 9, protowire.BytesType)
	msg = protowire.AppendBytes(msg, []byte("not read"))
	msg = protowire.AppendTag(msg, 4, protowire.Fixed64Type)
	msg = binary.LittleEndian.AppendUint64(msg, 7)
	msg = protowire.AppendTag(msg, 5, protowire.BytesType)
	msg = protowire.AppendBytes(msg, []byte("last"))
	want := fmt.Sprint([]string{"1:" + string(bytes.Repeat([]byte("a"), 300)), "9:skipped 8", "5:last"})
	for _, step := range []int{1, 2, 3, 7, 64, len(msg)} {
		r := &recorder{}
		if err := Decode(cut(msg, step), r); err != nil {
			t.Fatalf("cut every %d bytes: %v", step, err)
		}
		if got := fmt.Sprint(r.fields); got != want || r.messages != 1 {
			t.Errorf("cut every %d bytes: %d messages, fields %.80s; want 1, %.80s", step, r.messages, got, want)
		}
	}
	for _, bad := range [][]byte{msg[:len(msg)-1], {0x80}, {0x0b}, {0x0a, 0x05, 'x'}} {
		if err := Decode(cut(bad, 3), &recorder{}); err == nil {
			t.Errorf("% x decoded", bad)
		}
	}
}

// BytesMessage's bytes are proto's for any field number and length, the
// field's bytes are data itself, and Decode reads them back.
func TestBytesMessage(t *testing.T) {
	for _, num := range []protowire.Number{1, 2, 15, 16, 2047, 2048, protowire.MaxValidNumber} {
		for _, n := range []int{0, 1, 127, 128, 16383, 16384, 1 << 20} {
			t.Run(fmt.Sprintf("field %d/%d bytes", num, n), func(t *testing.T) {
				data := bytes.Repeat([]byte{byte(n)}, n)
				got := BytesMessage(num, data)
				want := protowire.AppendBytes(protowire.AppendTag(nil, num, protowire.BytesType), data)
				if !bytes.Equal(got.Materialize(), want) {
					t.Fatalf("encoded %d bytes unlike proto's %d", got.Len(), len(want))
				}
				if last := got[len(got)-1].ReadOnlyData(); n > 0 && &last[0] != &data[0] {
					t.Fatal("the field's bytes were copied")
				}
				r := &recorder{}
				if err := Decode(got, r); err != nil || len(r.fields) != 1 {
					t.Fatalf("decoded %v (%v), want one field", r.fields, err)
				}
			})
		}
	}
}
