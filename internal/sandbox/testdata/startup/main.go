//go:build wasip1

// Command startup is the sandbox tests' guest whose start-up (its
// runtime's and globals' initialization, before any call) logs a line and
// tries to read a secret and to fetch, which the host refuses: start-up
// runs for no call. Its export says what the attempts got. Built by the
// tests with GOOS=wasip1 GOARCH=wasm go build -buildmode=c-shared.
package main

import (
	"encoding/json"

	"github.com/hivemind/taskworker/guest"
)

//go:wasmimport taskworker secret_get
func secretGet(name uint64) uint64

//go:wasmimport taskworker http_fetch
func httpFetch(req, body uint64) uint64

//go:wasmimport taskworker last_error
func lastError() uint64

//go:wasmimport extism:host/env alloc
func extismAlloc(n uint64) uint64

//go:wasmimport extism:host/env store_u8
func extismStoreU8(offset uint64, v uint32)

//go:wasmimport extism:host/env load_u8
func extismLoadU8(offset uint64) uint32

//go:wasmimport extism:host/env length
func extismLength(h uint64) uint64

//go:wasmimport extism:host/env free
func extismFree(h uint64)

func put(b []byte) uint64 {
	h := extismAlloc(uint64(len(b)))
	for i, c := range b {
		extismStoreU8(h+uint64(i), uint32(c))
	}
	return h
}

func get(h uint64) string {
	if h == 0 {
		return ""
	}
	b := make([]byte, extismLength(h))
	for i := range b {
		b[i] = byte(extismLoadU8(h + uint64(i)))
	}
	extismFree(h)
	return string(b)
}

// atStart is what the start-up's attempts got: "read ..." or the host's
// refusal, for the secret and for the fetch.
var atStart = func() [2]string {
	guest.Log(guest.LevelInfo, "startup guest: starting up")
	var got [2]string
	if v := secretGet(put([]byte("TOKEN"))); v != 0 {
		got[0] = "read " + get(v)
	} else {
		got[0] = get(lastError())
	}
	desc, _ := json.Marshal(map[string]string{"url": "http://example.invalid/"})
	if v := httpFetch(put(desc), 0); v != 0 {
		got[1] = "fetched " + get(v)
	} else {
		got[1] = get(lastError())
	}
	return got
}()

func init() {
	guest.Function("at_start", func() [2]string { return atStart })
}

//go:wasmexport at_start
func atStartExport() int32 { return guest.Run("at_start") }

func main() {}
