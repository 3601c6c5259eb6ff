package keyring_test

import (
	"fmt"
	"os"
	"path/filepath"

	"github.com/hivemind/taskworker/internal/keyring"
)

// A file version's blocks are sealed under a data key of its own; the
// manifest keeps the data key wrapped by the pool's master key.
func Example() {
	dir, _ := os.MkdirTemp("", "keyring")
	defer os.RemoveAll(dir)
	k, _ := keyring.Open(filepath.Join(dir, keyring.FileName))

	d := keyring.NewDataKey()
	wrapped, _ := k.Wrap(d, "file f1 version 1") // stored in the manifest
	s, _ := d.Sealer()
	block := s.Seal(nil, 0, []byte("hello")) // what the workers store

	unwrapped, _ := k.Unwrap(wrapped, "file f1 version 1")
	s2, _ := unwrapped.Sealer()
	plain, _ := s2.Open(nil, 0, block)
	fmt.Printf("%s, %d bytes stored\n", plain, len(block))
	// Output: hello, 21 bytes stored
}
