package keyring

import (
	"crypto/cipher"
	"encoding/binary"
	"fmt"
)

// Overhead is how many bytes Seal adds to a block: GCM's tag.
const Overhead = 16

// Sealer encrypts the blocks of one file version (or one secret) under
// its data key. It is safe for concurrent use.
type Sealer struct{ aead cipher.AEAD }

// Sealer returns the AES-256-GCM sealer of d.
func (d DataKey) Sealer() (*Sealer, error) {
	aead, err := newGCM(d[:])
	if err != nil {
		return nil, err
	}
	return &Sealer{aead: aead}, nil
}

// nonce is the block's index: each index is sealed once per data key (see
// the package's caveats), so no nonce repeats under a key.
func nonce(index uint64) []byte {
	n := make([]byte, 12)
	binary.BigEndian.PutUint64(n[4:], index)
	return n
}

// Seal appends to dst the encryption of block index, Overhead bytes
// longer than plain.
func (s *Sealer) Seal(dst []byte, index uint64, plain []byte) []byte {
	return s.aead.Seal(dst, nonce(index), plain, nil)
}

// Open appends to dst the decryption of block index, or fails with
// ErrCorrupt if the block was damaged, is another block, or belongs to
// another data key.
func (s *Sealer) Open(dst []byte, index uint64, sealed []byte) ([]byte, error) {
	out, err := s.aead.Open(dst, nonce(index), sealed, nil)
	if err != nil {
		return nil, fmt.Errorf("block %d: %w", index, ErrCorrupt)
	}
	return out, nil
}
