// Package files is the pool's side of distributed file storage: the
// FileService. It cuts files into blocks, erasure-codes each block into k+m
// shards (package erasure), places them on distinct workers (package
// placement), stores them through the workers' ShardService, and commits a
// manifest to etcd only once every block is durable. Reads fetch any k
// verified shards per block. A repairer rebuilds the shards of lost workers
// and of damaged shards; a collector deletes shards no manifest refers to.
//
// The concepts, one file each:
//
//   - manifest.go: what etcd holds: a small record per file (files/<user>/<id>,
//     the one Synchronous follows) and a manifest per version
//     (manifests/<id>/<version>) with the block checksums and placement.
//   - write.go: Push, Revise and Upload; read.go: Get, Download.
//   - sync.go: Synchronous and WatchChanges, exact by etcd revision.
//   - repair.go: the repairer; inventory.go: the comparison of the workers'
//     shard listings with the manifests (anti-entropy); gc.go: the
//     collector of failed writes' shards. All run on one pool at a time,
//     chosen by an etcd election.
//   - status.go: each file's redundancy, for Stat and `taskworker status`.
//
// # Caveats
//
// A manifest is one etcd value, so a file's size is bounded by etcd's
// request limit (Config.MaxManifestBytes): 37 GiB at the default 8 MiB
// blocks and 4+2, 209 GiB at 1+0. An upload that declares a larger size is
// refused before its first byte, one that does not as soon as it passes the
// limit (ResourceExhausted), never after the whole upload. Repair,
// inventory comparison and collection run on the elected pool only; the
// others serve reads and writes.
//
// A shard deleted behind a worker's back is found at the next inventory
// pass (InventoryInterval), not at once; each pass lists every worker's
// shards, O(shards). The collector deletes only shards of writes that have
// an intent record (writes/<file>/<write>) in this network's etcd: shards of
// writes older than the intent records, or of a worker that was away when
// an intent was dropped, are never collected (a leak, never a loss).
package files
