// Package files is the pool's side of distributed file storage: the
// FileService. It cuts files into blocks, seals each block under the
// write's own data key (package keyring), erasure-codes each sealed block
// into k+m shards (package erasure), places them on distinct workers (package
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
//   - segment.go: a large version's block checksums and placement, in
//     values of SegmentBlocks blocks (segments/<id>/<write>/<n>) that its
//     manifest counts, so that no etcd value bounds a file's size.
//   - write.go: Push, Revise and Upload, and which of their failures are
//     definite (serving.NotCommitted); read.go: Get, Download, Delete.
//   - seal.go: the data key of each write, the sealing of blocks and inline
//     files, and RewrapKeys after a master key rotation.
//   - batch.go: the committer, which sends the commit transactions of
//     concurrent writes to etcd together, each a nested transaction.
//   - retention.go: which versions a commit deletes (keep the last N, and
//     those younger than KeepFor), and each user's storage use, which the
//     quota bounds, kept by the same transactions.
//   - sync.go: Synchronous and WatchChanges, exact by etcd revision.
//   - repair.go: the repairer; inventory.go: the comparison of the workers'
//     shard listings with the manifests (anti-entropy); gc.go: the
//     collector of failed writes' shards. All run on one pool at a time,
//     chosen by an etcd election.
//   - status.go: each file's redundancy, for Stat and `taskworker status`.
//
// # Caveats
//
// A file's size is bounded by MaxFileBytes (by default only by the erasure
// format) and by the workers' disks: an upload that declares a larger size
// is refused before its first byte, one that does not as soon as it passes
// the limit (ResourceExhausted). Free space is not checked ahead: a write
// that fills the workers fails when no worker takes its shards. A write
// holds its file's checksums and placement in memory until its commit, and
// a read loads all of a version's segments before its first byte: some
// 300 bytes a block at 4+2, 40 MiB for a TiB at 8 MiB blocks. Repair,
// inventory comparison and collection run on the elected pool only; the
// others serve reads and writes.
//
// Workers and etcd hold ciphertext, but not everything is hidden: a worker
// sees file and write ids and the sizes of blocks (so a file's size, to 16
// bytes a block); etcd's manifests keep filenames and the plaintext's
// SHA-256 (etcd is the pools' alone). Data keys are per write and never
// seal a block index twice; a pool without the master key that wrapped a
// version's key cannot read it (FailedPrecondition, naming the key).
//
// Retention runs at commits: a version that ages past KeepFor goes at its
// file's next commit, not by itself. A write of unknown size is refused by
// the storage quota only once its bytes pass what is left, so it may have
// stored (and then drops) shards; the use counts plaintext bytes, not the
// shards' overhead. Once a storage quota applies to a user, their commits
// compare-and-swap one record: two committing at the same instant retry
// one of them.
//
// Commits batch only when none writes a key another compares or writes: a
// user's commits under a storage quota (one usage record) or revisions of
// one file go one batch after the other. The change mark of users without
// a quota is written once per batch, even when every commit in it failed
// its comparisons; a count of their use then only runs again. A commit
// waits for the batch before it: a lone write gains nothing and loses one
// round trip at most.
//
// Only a write whose commit transaction was sent and got no answer fails
// without the NotCommitted mark: it may have been applied. Its shards and
// segments are left to the collector, which keeps them if the manifest is
// there.
//
// A shard deleted behind a worker's back is found at the next inventory
// pass (InventoryInterval), not at once; each pass lists every worker's
// shards, O(shards). The collector deletes only shards of writes that have
// an intent record (writes/<file>/<write>) in this network's etcd: shards of
// writes older than the intent records, or of a worker that was away when
// an intent was dropped, are never collected (a leak, never a loss). A write
// refreshes its intent while it runs; one whose pool could not reach etcd
// for GCMinAge may lose its intent, and then fails at its commit.
package files
