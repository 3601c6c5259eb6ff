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
//	tasks/run/<id>           a claim, under the claiming replica's lease
//	tasks/running/<id>       a running task, with no lease: a running entry
//	                         whose claim is gone is an orphan to requeue
//	tasks/cancel/<id>        a cancellation for the replica running it
//	tasks/idem/<owner>/<key> the task an idempotency key names
//
// Every change of a record is a transaction that compares the record's
// revision, so a claim, a cancellation and a recovery that race cannot
// both win.
//
// # Caveats
//
//   - A replica holds its claims under one etcd lease: it must keep it
//     alive, and a replica cut off from etcd for longer than the lease's TTL
//     has its tasks run again elsewhere while it may still be running them.
//   - Queued tasks are served oldest first, owners taking turns; a task
//     waits in etcd, not in memory, but every replica keeps the queue's keys
//     (not the records) in memory to pick from.
//   - Ended tasks are kept for Config.Keep (by leases shared by all the
//     tasks that ended in the same hour), then removed by etcd.
package tasks
