// Package shardserver is the worker's side of distributed storage: it serves ShardService (see
// api/taskworker/v1/shard.proto) to the pool over the worker's shardstore.Store, and runs the store's
// scrubber, reporting the damaged shards it finds so the pool rebuilds them.
//
// The types are few:
//   - Server, made by New with Options (DefaultOptions, Validate): PutShard, GetShard, DeleteShards,
//     ListShards, Usage.
//   - RunScrubber with ScrubberOptions and a ReportFunc.
//   - KeyToProto, KeysToProto and KeyFromProto convert shard keys; KeyFromProto validates.
//
// Errors become gRPC status codes here and nowhere else: an invalid key or malformed request is
// InvalidArgument, a missing shard NotFound, a corrupt one DataLoss, an oversized one (or a full disk)
// ResourceExhausted, a closing store Unavailable, anything else Internal; each message says what to do.
//
// # Caveats
//
//   - GetShard holds the whole shard in memory (up to the store's MaxShardSize, 256 MiB by default) while
//     it sends it: shardstore.Get verifies the checksum before returning any byte, so no unverified byte
//     is ever sent. Concurrent large reads cost memory accordingly.
//   - PutShard's size limit is checked as bytes arrive, but the bytes are on disk (in a temp file that
//     Put then removes) until the limit is passed.
//   - ListShards costs a Stat per shard (for newest_ms), and Usage walks the store: O(shards) each. The
//     pool should call them for reconciliation, not per request; Usage is not cached here.
//   - ListShards relies on shardstore.List yielding a write's shards together; a write of more than 4096
//     shards on one worker comes in several consecutive messages, which the pool merges.
//   - DeleteShards' count is of shards this call found and removed; two concurrent deletions of one
//     shard may both count it.
//   - A corrupt shard found by GetShard is answered DataLoss and logged but not reported by this package;
//     the caller that got DataLoss reports it (or the next scrub pass does).
//   - The server does not authenticate: the worker's gRPC server admits only the pool's certificate
//     (auth.UnaryWorkerInterceptor over mTLS), and with --insecure anyone who reaches the worker.
package shardserver
