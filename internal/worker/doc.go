// Package worker is the worker node: a gRPC server that runs the functions
// registered on it when the pool calls them, and a registration loop that
// keeps the worker listed in the pool.
//
// [Server] is the one type. The public library (package taskworker) and the
// `taskworker worker` daemon are thin layers over it; the cluster test
// harness uses it directly to kill workers the way a crash would.
//
// A worker serves only its pool: every call must present the call key the
// worker sent when it registered.
//
// # Caveats
//
// Between a worker's deregistration and the moment every pool has seen it,
// a pool may still send it a call; Stop waits Config.DrainDelay for that
// before it refuses new calls, and finishes the calls already running.
package worker
