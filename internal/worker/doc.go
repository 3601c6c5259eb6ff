// Package worker is the worker node: a gRPC server that runs the functions
// registered on it when the pool calls them, and a registration loop that
// keeps the worker listed in the pool.
//
// [Server] is the one type. The public library (package taskworker) and the
// `taskworker worker` daemon are thin layers over it; the cluster test
// harness uses it directly to kill workers the way a crash would.
//
// A worker proves who it is with a certificate naming its id, which it
// gets once from the pool (enrolment, paid with a join token) for a key it
// makes and keeps in <data-dir>/identity, and renews over mTLS at two
// thirds of its life. It serves only its pool: every call must come over
// mTLS from the pool's certificate (spiffe://<cluster>/pool) from the CA it
// was given.
//
// A data directory belongs to one network: the worker records its pool's
// cluster ID in <data-dir>/network at the first registration, and a pool of
// another network refuses it (Refused, Err), after which the worker closes
// its shard store without touching it.
//
// Function code reaches outside only through the pool: the pool gives each
// call it forwards a token (FunctionCallRequest.call_token), and the worker
// puts a Host in the call's context (package callhost) that asks the pool,
// with that token, for the call's secrets and outbound requests. A call
// without a token (one made on the worker directly) reaches nothing.
//
// With Config.Metrics (metrics.NewWorker) the worker counts the calls it
// runs and the RPCs it serves, and reads at each scrape its calls in
// flight, its sandbox's child processes (childproc's counts) and its
// shards; with Config.Tracing it records a span for each call, continuing
// the trace the pool's call frame carries (CallFrame.traceparent), and one
// for each run in the sandbox. Off, neither adds work to a call.
//
// # Caveats
//
// The sandbox's counts are the process's: two workers in one process
// report the same children.
//
// A data directory without a network file is claimed by the first network
// the worker enrols with, shards and all.
//
// A worker without a data directory makes a new key at every start and
// enrols again, paying with its join token each time; its id is bound to
// its key only while it is live (EnrollRequest.ephemeral_key).
//
// Between a worker's deregistration and the moment every pool has seen it,
// a pool may still send it a call; Stop waits Config.DrainDelay for that
// before it refuses new calls, and finishes the calls already running.
package worker
