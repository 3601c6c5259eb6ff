// Package tasks runs calls that outlive their caller. A task is a function
// call recorded in etcd: Submit answers once the record is durable, a pool
// replica's Runner claims it, calls the function through the pool's router
// like any call, and records the result. If the worker is lost the call
// fails and the task is queued again for another worker; if the pool
// replica running it is lost, its etcd lease ends and another replica
// queues the task again. Tasks therefore run at least once: a function sees
// its task id and attempt number and can make its effects idempotent.
//
// The keys, under the pool's prefix:
//
//	tasks/u/<owner>/<id>     the task record (v1.Task), newest id last
//	tasks/queue/<id>         a queued task: owner and not-before time
//	tasks/replica/<lease>    a runner's presence, under its etcd lease
//	tasks/running/<id>       a running task: owner and the lease of the
//	                         replica that claimed it; one whose replica's
//	                         presence is gone is an orphan to requeue
//	tasks/cancel/<id>        a cancellation for the replica running it
//	tasks/idem/<owner>/<key> the task an idempotency key names
//	tasks/active/<owner>/<id> a task that has not ended (the tasks quota)
//
// Every change of a record is a transaction that compares the record's
// revision, so a claim, a cancellation and a recovery that race cannot
// both win.
//
// What a task costs etcd (docs/BENCHMARKS.md, "Tasks"): a task submitted
// to a replica with a free slot is recorded already claimed by it, in one
// transaction, and its outcome in a second one, written without reading
// the record first (the transaction compares the revision the claim
// wrote); its waiters hear of the end from one watch of all records that
// serves every Wait of the replica. A task that waits in the queue costs
// a read and a claim more, but a runner claims many in one round. All
// these writes go through one group-commit batcher (batch.go): the writes
// that arrive while a transaction is in flight go together in the next.
//
// # Caveats
//
//   - A replica holds its claims under one etcd lease: it must keep it
//     alive, and a replica cut off from etcd for longer than the lease's TTL
//     has its tasks run again elsewhere while it may still be running them.
//   - Queued tasks are served oldest first, owners taking turns; a task
//     waits in etcd, not in memory, but every replica keeps the queue's keys
//     (not the records) in memory to pick from. Replicas share the queue by
//     a hash of the task id, and take the others' share after a quarter
//     second. A task submitted to a replica with a free slot and no ready
//     queued task skips the queue: it is that replica's at once.
//   - A write whose transaction failed may yet have taken effect: a claim
//     or outcome so written leaves a running task that this replica is not
//     running, which its next sweep queues again (SweepInterval).
//   - Ended tasks are kept for Config.Keep (by leases shared by all the
//     tasks that ended in the same quarter of it), then removed by etcd.
//     At the rates the runner reaches, that sizes etcd: a trivial task's
//     record is about 150 bytes, so a day of 1,000 tasks/s is over 10 GiB,
//     past etcd's quota; hence a Keep of minutes (the pool's
//     --task-retention, 10 minutes by default).
package tasks
