// Package function binds a Go func to JSON arguments, so that any Go function
// can be registered on a worker and called over the network.
//
// There is one type, [Func]: [Bind] inspects a function once with reflection
// and [Func.Call] decodes a call's JSON arguments into its parameters, calls
// it, and encodes its result.
//
// The accepted shapes are
//
//	func([ctx context.Context,] params...) [result] [error]
//
// Arguments arrive as a JSON array bound by position to params. A function
// whose only parameter (after the context) is a struct or a pointer to one
// also accepts a JSON object for it. Empty arguments mean no arguments. A
// function whose only parameter is a [Raw] gets the arguments unparsed. The
// result is JSON ("null" for none; a Raw result as it is).
//
// This is the one binder: the native worker and the guest SDK (package
// guest, compiled to WebAssembly) both call it, and the rules are written
// down in docs/ABI.md ("Arguments and results"). Package bindingtest holds
// the table of cases, as JSON that a worker in another language can run.
//
// # Caveats
//
// Parameter names are not available through reflection, so errors name
// arguments by position and type ("argument 2 (int)").
//
// The scalar fast path (scalar.go) binds only what it is sure encoding/json
// would bind the same way; FuzzScalarPath holds it to that.
package function
