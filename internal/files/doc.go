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
//   - repair.go: the repairer; gc.go: the collector; both run on one pool at
//     a time, chosen by an etcd election.
//   - status.go: each file's redundancy, for Stat and `taskworker status`.
//
// # Caveats
//
// A manifest is one etcd value, so a file's size is bounded by etcd's
// request limit: about 60 GiB at the default 8 MiB blocks. Repair and
// collection run on the elected pool only; the others serve reads and
// writes.
package files
