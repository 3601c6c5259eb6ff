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
// also accepts a JSON object for it. Empty arguments mean no arguments.
//
// # Caveats
//
// Parameter names are not available through reflection, so errors name
// arguments by position and type ("argument 2 (int)").
package function
