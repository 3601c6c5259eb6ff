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
// A data directory belongs to one network: the worker records its pool's
// cluster ID in <data-dir>/network at the first registration, and a pool of
// another network refuses it (Refused, Err), after which the worker closes
// its shard store without touching it.
//
// # Caveats
//
// A data directory without a network file is claimed by the first network
// the worker registers with, shards and all.
//
// Between a worker's deregistration and the moment every pool has seen it,
// a pool may still send it a call; Stop waits Config.DrainDelay for that
// before it refuses new calls, and finishes the calls already running.
package worker
