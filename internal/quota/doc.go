// Package quota holds each user's quotas: how much storage, how many and
// how large deployed modules, how many calls at once, how many sandbox
// processes, how many tasks, and how many file versions are kept. An admin
// sets them per user; users who have none get the network's defaults.
//
// The services that spend a resource check it before doing any work, and
// answer ResourceExhausted naming the quota and the current use:
//
//   - storage bytes and the versions kept: the file service, in the commit
//     transaction (internal/files);
//   - modules and module bytes: deploy; calls: the pool's router, per
//     replica (internal/pool);
//   - sandbox processes: the worker running the call, from the quota the
//     pool sends with each deployed call (internal/worker);
//   - tasks: submit, counting the user's tasks not yet ended
//     (internal/tasks).
//
// # Caveats
//
//   - Quotas bound what a user may start, not what already exists: lowering
//     one below the current use refuses new work but deletes nothing.
package quota
