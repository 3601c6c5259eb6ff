package childproc

import (
	"bufio"
	"encoding/binary"
	"encoding/json"
	"errors"
	"fmt"
	"io"
)

// ErrFrameTooLarge is returned by ReadFrame for a frame over its bound.
var ErrFrameTooLarge = errors.New("frame too large")

// WriteFrame writes one frame to w and flushes it.
func WriteFrame(w *bufio.Writer, typ byte, payload []byte) error {
	BufferFrame(w, typ, payload)
	return w.Flush()
}

// BufferFrame writes one frame to w without flushing it: several frames
// then go in one write. An error shows at the next Flush.
func BufferFrame(w *bufio.Writer, typ byte, payload []byte) {
	var hdr [5]byte
	hdr[0] = typ
	binary.BigEndian.PutUint32(hdr[1:], uint32(len(payload)))
	w.Write(hdr[:])
	w.Write(payload)
}

// WriteJSONFrame writes one frame whose payload is v as JSON.
func WriteJSONFrame(w *bufio.Writer, typ byte, v any) error {
	payload, err := json.Marshal(v)
	if err != nil {
		return err
	}
	return WriteFrame(w, typ, payload)
}

// ReadFrame reads one frame. limit returns the largest payload accepted for
// a frame type; a larger one is not read, and ReadFrame returns its type
// with an error wrapping ErrFrameTooLarge.
func ReadFrame(r *bufio.Reader, limit func(typ byte) int) (byte, []byte, error) {
	var hdr [5]byte
	if _, err := io.ReadFull(r, hdr[:]); err != nil {
		return 0, nil, err
	}
	typ := hdr[0]
	n := binary.BigEndian.Uint32(hdr[1:])
	if max := limit(typ); int64(n) > int64(max) {
		return typ, nil, fmt.Errorf("%w: %q frame of %d bytes, over %d", ErrFrameTooLarge, typ, n, max)
	}
	payload := make([]byte, n)
	if _, err := io.ReadFull(r, payload); err != nil {
		if err == io.EOF {
			err = io.ErrUnexpectedEOF
		}
		return typ, nil, err
	}
	return typ, payload, nil
}
