// Package chaos checks that the file service is linearizable under faults,
// the way etcd's robustness tests check etcd: several clients run random
// Push, Revise (with and without expected_version), Get, Delete and
// FileHistory on a few shared files, recording each call's start, end and
// result, while an injector SIGKILLs and restarts workers, SIGKILLs and
// restarts one of two pool replicas, SIGSTOPs a worker for longer than its
// lease and fills a worker's disk. Then porcupine checks the history
// against a model of the service (Model: per file, its versions and their
// contents by SHA-256, with compare-and-swap), and the run checks that the
// network healed: every worker back, every file that exists readable and
// at full redundancy, no file that should not exist.
//
// The pieces, one file each:
//
//   - model.go: the sequential specification, a porcupine
//     NondeterministicModel partitioned by file.
//   - history.go: the recorded history, and how ambiguous writes are
//     resolved before the check.
//   - workload.go: the clients.
//   - faults.go: the fault classes and the injector.
//   - cluster.go: the network: an etcd in this process (killing a pool
//     never kills it), pool and worker processes of the taskworker binary,
//     and a TCP balancer in front of the pools.
//   - run.go: Run, the final checks and the report.
//
// The test in this package runs it for about a minute in CI;
// `taskworker bench chaos --duration 10m` runs it longer. tasks_test.go
// uses the same cluster for tasks: 500 of them through a worker's and a
// pool replica's SIGKILL, and a schedule fired by one of three pool
// replicas once per tick. A failing
// history is written as porcupine's HTML visualization to
// $TASKWORKER_ARTIFACTS (or the temporary directory), named after the seed.
//
// # Caveats
//
// The seed fixes every random choice (operations, contents, faults and
// their lengths) but not the timing of processes on a loaded machine, so a
// replay is the same workload under the same faults, not the same history.
//
// A write that failed ambiguously (Unavailable, DeadlineExceeded, a broken
// connection) may or may not have taken effect, and may do so later than
// its caller gave up; the model lets it do either, and the check never
// returns it (see resolve). Where a later read saw its content, or the
// file's final FileHistory shows it did not happen, the history says so
// instead, which keeps the check fast; the same refinement etcd's tests make.
// A write whose failure the pool marks as not committed (serving.NotCommitted)
// did nothing, and the check holds the pool to it: a file or version such a
// write would have made fails the check.
//
// The disk-full fault mounts a tmpfs and needs root; without it the fault
// is skipped with a logged reason. A run that is killed leaves it mounted
// on DIR/disk: unmount it before removing DIR. Pools and workers are separate processes
// of the binary, so the package's test builds it first.
package chaos
