// Package callhost is what function code reaches outside itself during a
// call: the secrets its function is granted and the egress proxy, both
// carried out by the pool for the call, never by the worker on its own.
//
// There is one interface, [Host], which travels in the call's context:
// the worker puts one there ([With]) for each call the pool forwarded with
// a call token, and every runtime takes it from there ([From]): the
// library's Secret and Fetch for native Go functions, the WebAssembly
// sandbox's host functions (taskworker.secret_get, taskworker.http_fetch
// and Extism's http_request) and the Starlark builtins (secret, http.get,
// http.post, ...). A sandboxed function running in a child process asks
// its parent, the worker, which asks its Host.
//
// Errors are gRPC statuses from end to end: the pool's answer (say
// PermissionDenied for a secret not granted, naming the command that
// grants it) reaches the function with its code and message, and a
// function that returns it passes both on to its caller. A call with no
// Host gets [ErrNoCall].
//
// # Caveats
//
//   - A Host is only as good as the token it carries: the pool decides, per
//     call, what the token opens, and forgets the token when the call ends.
//     Function code that keeps a Host past its call gets ErrUnknownCall's
//     PermissionDenied from the pool.
//   - Secret values pass through the worker's memory (and, for sandboxed
//     code, the pipe to its child) in the clear; nothing here logs them.
package callhost
