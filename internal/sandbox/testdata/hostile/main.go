//go:build wasip1

// Command hostile is the sandbox tests' misbehaving guest: each export tries
// one way out of the sandbox or past a limit, next to well-behaved ones the
// tests call afterwards to show the runtime still serves. Built by the tests
// with GOOS=wasip1 GOARCH=wasm go build -buildmode=c-shared.
package main

import (
	"encoding/json"
	"fmt"
	"net"
	"os"
	"strings"

	"github.com/hivemind/taskworker/guest"
)

var (
	kept      [][]byte
	listeners []net.Listener
)

func recurse(n int) int { return recurse(n+1) + 1 }

// work is the CPU-bound loop of the benchmarks; bench_test.go has the
// same code, run natively.
func work(n int) uint64 {
	x := uint64(1)
	for i := 0; i < n; i++ {
		x = x*6364136223846793005 + 1442695040888963407
		x ^= x >> 29
	}
	return x
}

func init() {
	// Raw: these take and give bytes as they are, not JSON.
	guest.Function("ok", func() guest.Raw { return guest.Raw("ok") })
	guest.Function("echo", func(b guest.Raw) guest.Raw { return b })
	guest.Function("spin", func() int {
		for {
		}
	})
	guest.Function("grow", func() int {
		for {
			kept = append(kept, make([]byte, 1<<20))
		}
	})
	guest.Function("output", func(n int) string { return strings.Repeat("x", n) })
	guest.Function("recurse", func() int { return recurse(0) })
	guest.Function("panic", func() int { panic("boom") })
	guest.Function("read_file", func(path guest.Raw) (string, error) {
		b, err := os.ReadFile(string(path))
		if err != nil {
			return "", err
		}
		return string(b), nil
	})
	guest.Function("list_dir", func(path guest.Raw) (string, error) {
		entries, err := os.ReadDir(string(path))
		if err != nil {
			return "", err
		}
		return fmt.Sprint(len(entries), " entries"), nil
	})
	guest.Function("dial", func(addr guest.Raw) (string, error) {
		c, err := net.Dial("tcp", string(addr))
		if err != nil {
			return "", err
		}
		c.Close()
		return "connected", nil
	})
	guest.Function("listen", func(addr guest.Raw) (string, error) {
		l, err := net.Listen("tcp", string(addr))
		if err != nil {
			return "", err
		}
		listeners = append(listeners, l) // left open for the host to try
		return "listening", nil
	})
	guest.Function("env", func() (map[string]any, error) {
		return map[string]any{"environ": os.Environ(), "args": os.Args[min(len(os.Args), 1):]}, nil
	})
	guest.Function("extism_http", func(url guest.Raw) (int64, error) {
		req, _ := json.Marshal(map[string]string{"url": string(url), "method": "GET"})
		return int64(extismHTTPRequest(store(req), 0)), nil
	})
	guest.Function("work", work)
	guest.Function("log", func(lines, size int) int {
		for i := range lines {
			guest.Log(guest.LevelInfo, fmt.Sprintf("line %d %s", i, strings.Repeat("y", size)))
		}
		return lines
	})
	// log_work logs lines lines, then works n steps: a call that sends
	// frames, or one that overruns without sending any.
	guest.Function("log_work", func(lines, n int) uint64 {
		for i := range lines {
			guest.Log(guest.LevelInfo, fmt.Sprintf("line %d", i))
		}
		return work(n)
	})
}

//go:wasmimport extism:host/env http_request
func extismHTTPRequest(request, body uint64) uint64

//go:wasmimport extism:host/env alloc
func extismAlloc(length uint64) uint64

//go:wasmimport extism:host/env store_u8
func extismStoreU8(offset uint64, value uint32)

func store(b []byte) uint64 {
	offset := extismAlloc(uint64(len(b)))
	for i, c := range b {
		extismStoreU8(offset+uint64(i), uint32(c))
	}
	return offset
}

//go:wasmexport ok
func ok() int32 { return guest.Run("ok") }

//go:wasmexport echo
func echo() int32 { return guest.Run("echo") }

//go:wasmexport spin
func spin() int32 { return guest.Run("spin") }

//go:wasmexport grow
func grow() int32 { return guest.Run("grow") }

//go:wasmexport output
func output() int32 { return guest.Run("output") }

//go:wasmexport recurse
func recurseExport() int32 { return guest.Run("recurse") }

//go:wasmexport panic
func panicExport() int32 { return guest.Run("panic") }

//go:wasmexport read_file
func readFile() int32 { return guest.Run("read_file") }

//go:wasmexport list_dir
func listDir() int32 { return guest.Run("list_dir") }

//go:wasmexport dial
func dial() int32 { return guest.Run("dial") }

//go:wasmexport listen
func listen() int32 { return guest.Run("listen") }

//go:wasmexport env
func env() int32 { return guest.Run("env") }

//go:wasmexport extism_http
func extismHTTP() int32 { return guest.Run("extism_http") }

//go:wasmexport work
func workExport() int32 { return guest.Run("work") }

//go:wasmexport log
func logExport() int32 { return guest.Run("log") }

//go:wasmexport log_work
func logWorkExport() int32 { return guest.Run("log_work") }

func main() {}
