// Package localnet runs a whole TaskWorker network on one machine, the
// embedded default behind `taskworker up`: an embedded etcd and a pool in
// this process, and N worker processes (this binary's `worker` command),
// all on 127.0.0.1, with their data under one directory.
//
// It is the same components as a real network, only started together: the
// workers are separate processes that register with the pool over gRPC, and
// are restarted if they exit. `taskworker bench files` uses it too, to
// measure storage and repair with workers it may kill.
//
// Start takes a lock on the directory (one network per directory), checks
// the pool's address before writing anything, and returns once every worker
// has registered since it began (docs/RATIONALE.md, "When is `up` ready?").
//
// # Caveats
//
//   - The address check and the pool's listen are two steps: another process
//     can take the port between them; the pool's own error then says so.
//   - A dead run's registrations of worker ids this run does not start (a
//     run with fewer --workers) stay listed until their leases lapse (the
//     pool's lease TTL, 5 s by default); calls routed to them fail over only
//     for idempotent functions.
//   - The lock is flock(2): it does not guard a directory on a network file
//     system that ignores it.
package localnet
