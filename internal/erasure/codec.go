package erasure

import (
	"sync"

	"github.com/klauspost/reedsolomon"
)

// codecs caches one Reed-Solomon coder per layout: building one inverts matrices, and a coder is safe for
// concurrent use (its matrices are read-only and its inversion cache is locked).
var codecs sync.Map // Layout -> reedsolomon.Encoder

func codecFor(l Layout) (reedsolomon.Encoder, error) {
	if c, ok := codecs.Load(l); ok {
		return c.(reedsolomon.Encoder), nil
	}
	if err := l.Validate(); err != nil {
		return nil, err
	}
	c, err := reedsolomon.New(l.Data, l.Parity)
	if err != nil {
		return nil, err
	}
	actual, _ := codecs.LoadOrStore(l, c)
	return actual.(reedsolomon.Encoder), nil
}
