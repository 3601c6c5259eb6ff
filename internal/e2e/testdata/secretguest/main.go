//go:build wasip1

// Command secretguest is a WebAssembly function for the end-to-end tests:
// read_secret reads a secret through the host function
// taskworker.secret_get (docs/ABI.md) and returns the SHA-256 of the value
// (hex), never the value. Built by the tests with GOOS=wasip1 GOARCH=wasm
// go build -buildmode=c-shared.
package main

import (
	"crypto/sha256"
	"encoding/hex"
	"errors"

	"github.com/hivemind/taskworker/guest"
)

//go:wasmimport taskworker secret_get
func secretGet(name uint64) uint64

//go:wasmimport taskworker last_error
func lastError() uint64

//go:wasmimport extism:host/env alloc
func alloc(n uint64) uint64

//go:wasmimport extism:host/env store_u8
func storeU8(offset uint64, v uint32)

//go:wasmimport extism:host/env load_u8
func loadU8(offset uint64) uint32

//go:wasmimport extism:host/env length
func length(h uint64) uint64

//go:wasmimport extism:host/env free
func free(h uint64)

// put copies b into a new block (the host frees it).
func put(b []byte) uint64 {
	h := alloc(uint64(len(b)))
	for i, c := range b {
		storeU8(h+uint64(i), uint32(c))
	}
	return h
}

// get copies the block h out and frees it; nil for 0.
func get(h uint64) []byte {
	if h == 0 {
		return nil
	}
	b := make([]byte, length(h))
	for i := range b {
		b[i] = byte(loadU8(h + uint64(i)))
	}
	free(h)
	return b
}

func init() {
	guest.Function("read_secret", func(name string) (string, error) {
		v := secretGet(put([]byte(name)))
		if v == 0 {
			return "", errors.New(string(get(lastError())))
		}
		sum := sha256.Sum256(get(v))
		return hex.EncodeToString(sum[:]), nil
	})
}

//go:wasmexport read_secret
func readSecret() int32 { return guest.Run("read_secret") }

func main() {}
