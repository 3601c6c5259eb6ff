//go:build wasip1

// Command hostcalls is the sandbox tests' guest that reaches outside
// through the host: taskworker.secret_get, taskworker.http_fetch (with
// http_body and last_error), and Extism's own http_request, as a plugin
// built with an Extism PDK calls it. Its start-up (before any call, for
// none) logs a line and tries a secret read and a fetch, which the host
// refuses; at_start says what they got. It speaks the ABI by hand (docs/ABI.md)
// rather than through an SDK. Built by the tests with GOOS=wasip1
// GOARCH=wasm go build -buildmode=c-shared.
package main

import (
	"encoding/json"
	"errors"
	"fmt"

	"github.com/hivemind/taskworker/guest"
)

//go:wasmimport taskworker secret_get
func secretGet(name uint64) uint64

//go:wasmimport taskworker http_fetch
func httpFetch(req, body uint64) uint64

//go:wasmimport taskworker http_body
func httpBody() uint64

//go:wasmimport taskworker last_error
func lastError() uint64

//go:wasmimport extism:host/env http_request
func extismHTTPRequest(req, body uint64) uint64

//go:wasmimport extism:host/env http_status_code
func extismHTTPStatusCode() int32

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

// put copies b into a new block (the host frees it).
func put(b []byte) uint64 {
	h := extismAlloc(uint64(len(b)))
	for i, c := range b {
		extismStoreU8(h+uint64(i), uint32(c))
	}
	return h
}

// get copies the block h out and frees it; nil for 0.
func get(h uint64) []byte {
	if h == 0 {
		return nil
	}
	b := make([]byte, extismLength(h))
	for i := range b {
		b[i] = byte(extismLoadU8(h + uint64(i)))
	}
	extismFree(h)
	return b
}

func failure() error { return errors.New(string(get(lastError()))) }

// atStart is what the start-up's attempts got: "read ..." or the host's
// refusal, for the secret and for the fetch.
var atStart = func() [2]string {
	guest.Log(guest.LevelInfo, "hostcalls guest: starting up")
	var got [2]string
	if v := secretGet(put([]byte("TOKEN"))); v != 0 {
		got[0] = "read " + string(get(v))
	} else {
		got[0] = failure().Error()
	}
	desc, _ := json.Marshal(request{URL: "http://example.invalid/"})
	if v := httpFetch(put(desc), 0); v != 0 {
		got[1] = "fetched " + string(get(v))
	} else {
		got[1] = failure().Error()
	}
	return got
}()

type request struct {
	Method  string            `json:"method,omitempty"`
	URL     string            `json:"url"`
	Headers map[string]string `json:"headers,omitempty"`
}

func init() {
	guest.Function("at_start", func() [2]string { return atStart })
	guest.Function("secret", func(name guest.Raw) (guest.Raw, error) {
		v := secretGet(put(name))
		if v == 0 {
			return nil, failure()
		}
		return get(v), nil
	})
	// fetch sends GET url with the secret TOKEN in its Authorization
	// header, and returns the response's description and body.
	guest.Function("fetch", func(url string) (string, error) {
		desc, _ := json.Marshal(request{URL: url, Headers: map[string]string{"Authorization": "Bearer {{secret:TOKEN}}"}})
		meta := httpFetch(put(desc), 0)
		if meta == 0 {
			return "", failure()
		}
		return fmt.Sprintf("%s %s", get(meta), get(httpBody())), nil
	})
	// post sends POST url with a body, through Extism's http_request.
	guest.Function("extism_post", func(url string) (string, error) {
		desc, _ := json.Marshal(request{Method: "POST", URL: url})
		body := get(extismHTTPRequest(put(desc), put([]byte("from-extism"))))
		return fmt.Sprintf("%d %s", extismHTTPStatusCode(), body), nil
	})
	guest.Function("bad_request", func() (string, error) {
		if meta := httpFetch(put([]byte("{not json")), 0); meta != 0 {
			return "", errors.New("a bad request was carried out")
		}
		return "", failure()
	})
}

//go:wasmexport at_start
func atStartExport() int32 { return guest.Run("at_start") }

//go:wasmexport secret
func secret() int32 { return guest.Run("secret") }

//go:wasmexport fetch
func fetch() int32 { return guest.Run("fetch") }

//go:wasmexport extism_post
func extismPost() int32 { return guest.Run("extism_post") }

//go:wasmexport bad_request
func badRequest() int32 { return guest.Run("bad_request") }

func main() {}
