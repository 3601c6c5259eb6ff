//go:build wasip1

// Command secretguest is a WebAssembly function for the end-to-end tests:
// read_secret reads a secret with guest.Secret (the host function
// taskworker.secret_get, docs/ABI.md) and returns the SHA-256 of the value
// (hex), never the value. Built by the tests with GOOS=wasip1 GOARCH=wasm
// go build -buildmode=c-shared.
package main

import (
	"crypto/sha256"
	"encoding/hex"

	"github.com/hivemind/taskworker/guest"
)

func init() {
	guest.Function("read_secret", func(name string) (string, error) {
		v, err := guest.Secret(name)
		if err != nil {
			return "", err
		}
		sum := sha256.Sum256(v)
		return hex.EncodeToString(sum[:]), nil
	})
}

//go:wasmexport read_secret
func readSecret() int32 { return guest.Run("read_secret") }

func main() {}
