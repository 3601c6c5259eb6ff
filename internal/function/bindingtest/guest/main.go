//go:build wasip1

// Command guest is the binding table's functions (package bindingtest) as a
// WebAssembly module built with the guest SDK, so that the table runs
// against the guest as it really runs: compiled to wasip1, behind the
// Extism ABI, called through a pool. One export per function, each named
// like it.
package main

import (
	"github.com/hivemind/taskworker/guest"
	"github.com/hivemind/taskworker/internal/function/bindingtest"
)

func init() {
	for name, fn := range bindingtest.Functions {
		guest.Function(name, fn)
	}
}

//go:wasmexport add
func exportAdd() int32 { return guest.Run("add") }

//go:wasmexport area
func exportArea() int32 { return guest.Run("area") }

//go:wasmexport count
func exportCount() int32 { return guest.Run("count") }

//go:wasmexport divide
func exportDivide() int32 { return guest.Run("divide") }

//go:wasmexport echo_bytes
func exportEchoBytes() int32 { return guest.Run("echo_bytes") }

//go:wasmexport echo_raw
func exportEchoRaw() int32 { return guest.Run("echo_raw") }

//go:wasmexport explode
func exportExplode() int32 { return guest.Run("explode") }

//go:wasmexport fail
func exportFail() int32 { return guest.Run("fail") }

//go:wasmexport hello
func exportHello() int32 { return guest.Run("hello") }

//go:wasmexport mixed
func exportMixed() int32 { return guest.Run("mixed") }

//go:wasmexport none
func exportNone() int32 { return guest.Run("none") }

//go:wasmexport nothing
func exportNothing() int32 { return guest.Run("nothing") }

//go:wasmexport sink
func exportSink() int32 { return guest.Run("sink") }

//go:wasmexport swap
func exportSwap() int32 { return guest.Run("swap") }

//go:wasmexport wrap
func exportWrap() int32 { return guest.Run("wrap") }

func main() {}
