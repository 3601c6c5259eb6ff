//go:build wasip1

// Command go-add is a TaskWorker function written in Go with the guest SDK:
// add and hello, plus divide to show an error result.
//
// Build it as a WebAssembly reactor and deploy it:
//
//	GOOS=wasip1 GOARCH=wasm go build -buildmode=c-shared -o add.wasm ./examples/go-add
//	taskworker deploy add add.wasm
//	taskworker call add 1 2
package main

import (
	"errors"

	"github.com/hivemind/taskworker/guest"
)

func init() {
	// Function2 and Function1 call their function without reflection,
	// which is much of a small call's cost in WebAssembly; Function takes
	// any shape, such as divide's with its error.
	guest.Function2("add", func(a, b int) int { return a + b })
	guest.Function1("hello", func(name string) string {
		guest.Log(guest.LevelInfo, "saying hello to "+name)
		return "Hello, " + name + "!"
	})
	guest.Function("divide", func(a, b float64) (float64, error) {
		if b == 0 {
			return 0, errors.New("division by zero")
		}
		return a / b, nil
	})
}

//go:wasmexport add
func add() int32 { return guest.Run("add") }

//go:wasmexport hello
func hello() int32 { return guest.Run("hello") }

//go:wasmexport divide
func divide() int32 { return guest.Run("divide") }

// main is never called in a reactor; package main needs one all the same.
func main() {}
