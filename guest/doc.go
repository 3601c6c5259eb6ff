// Package guest is the Go SDK for TaskWorker functions that run in the
// WebAssembly sandbox. A function written with it has the shape of a native
// one registered with taskworker.Function, and its arguments and result are
// bound by the same code:
//
//	//go:build wasip1
//
//	package main
//
//	import "github.com/hivemind/taskworker/guest"
//
//	func init() {
//		guest.Function("add", func(a, b int) int { return a + b })
//	}
//
//	//go:wasmexport add
//	func add() int32 { return guest.Run("add") }
//
//	func main() {}
//
// built as a WebAssembly reactor:
//
//	GOOS=wasip1 GOARCH=wasm go build -buildmode=c-shared -o add.wasm .
//
// and deployed with `taskworker deploy add add.wasm`. The module is an
// ordinary Extism plugin: the host calls the exported symbol with the call's
// arguments as the plugin input, and the symbol returns 0 with the result as
// the plugin output, or 1 with an error message set.
//
// # Arguments and results
//
// The arguments and the result are bound by the same code as a native
// function's (package internal/function), to the rules of docs/ABI.md
// ("Arguments and results"), and a shared table of cases
// (internal/function/bindingtest) is run against both:
//
//   - The input is a JSON array, bound by position to the parameters; a
//     function taking one struct (or pointer to struct) also accepts a JSON
//     object for it. A function with no parameters accepts empty input,
//     "null" or "[]".
//   - The output is the result encoded as JSON; a function with no result
//     (other than error) outputs null.
//   - A function whose only parameter is a [Raw] receives the input as it
//     came, unparsed; a Raw result is the output as it is, unencoded.
//   - An optional leading context.Context parameter receives
//     context.Background(); an optional trailing error result is returned
//     to the caller as the call's error.
//
// Arguments that do not fit are reported as an error whose message starts
// with "invalid argument: ", which the host reports with the gRPC code
// InvalidArgument; other errors and panics are reported as the function's
// error.
//
// Function calls its function through reflection, which in WebAssembly is
// most of a small call's cost. [Function1] and [Function2] take a func of
// one or two parameters and one result by its type, bind it by the same
// rules, and call it directly; when its parameters are numbers, bools or
// strings and its result an integer or a bool, a call with plain JSON
// arguments uses no reflection at all (add(1, 2): about 6 µs a warm call,
// against 13-16 µs through reflection).
//
// # Host functions
//
// Log writes a line to the worker's log through the taskworker.log host
// function (see docs/ABI.md). Further host functions (secrets, outbound
// fetch, DNS, files) are added to this package as the host grows them.
//
// # Caveats
//
//   - Register functions in init: a reactor built with -buildmode=c-shared
//     runs package initialization when it is loaded but never calls main.
//     That start-up runs when the host makes an instance, before any call
//     and for none: a secret read or a fetch there fails; do them in the
//     function (docs/ABI.md, "Start-up").
//   - //go:wasmexport takes scalar types only, hence one small exported
//     function per registered function, each returning Run(name).
//   - The guest is single-threaded: goroutines run only while an export is
//     running, and time.Sleep does not wait (the host grants no real sleep).
//   - An instance serves many calls one after another: package-level state
//     survives between calls of the same instance, but the host may replace
//     an instance at any time, so it must not be relied on.
package guest
