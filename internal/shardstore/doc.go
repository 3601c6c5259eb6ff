// Package shardstore keeps shards on a worker's local disk: one file per shard, written atomically,
// checked on every read and by a background scrubber.
//
// A shard file is a header naming the shard (file ID, write ID, block, shard), the payload, and a footer
// with the payload's length and CRC32C; see format.go. Put writes a temp file beside the shard, fsyncs it,
// renames it over the shard's name and fsyncs the directory, so a reader or a crash sees the old shard or
// the new one, never a mix, and a file cut short by a power loss fails its checks instead of passing them.
// What the store creates is owner-only whatever the umask (directories 0700, files 0600), and Open
// tightens the shard directory of a store made before that.
//
// The types are few:
//   - Config, with DefaultConfig and Validate.
//   - Store: Open, Put, Get, Stat, Verify, Delete, List, GC, Usage, Scrub, RunScrubber, Close.
//   - Key names a shard; its IDs are restricted to [A-Za-z0-9_-], so no key names a path outside the store.
//   - Info describes a stored shard; CorruptError says which shard failed which check.
//   - ScrubHooks, Problem and ScrubStats connect the scrubber to its caller.
//
// Errors: ErrNotFound, ErrCorrupt (errors.As gives a *CorruptError), ErrInvalidKey, ErrTooLarge,
// ErrLocked, ErrClosed; I/O errors are wrapped as they come.
//
// # Caveats
//
//   - The CRC32C guards against the disk (bit rot, torn and lost writes), not against the worker: a
//     compromised worker can rewrite a shard and its CRC. The reader's end-to-end check is the BLAKE3 Sum
//     in the manifest (package erasure).
//   - Durability assumes the filesystem honors fsync on files and directories (ext4, xfs, btrfs, zfs on
//     Linux do). Where there is no flock (Windows, among others) the LOCK file does not keep a second
//     process out: run one worker per directory.
//   - Delete does not fsync the directory: a deletion a crash forgets comes back as garbage for GC.
//   - GC removes shards outside the caller's keep-set only when older than its minAge, since a keep-set
//     is a snapshot; pick minAge longer than the snapshot can be stale.
//   - Usage and List walk the directories: O(shards). Cache Usage if it is reported often.
//   - The scrubber reports Missing only for keys the caller says to expect (ScrubHooks.Expected); the
//     store alone cannot know what it should hold.
//   - A corrupt shard is reported, not moved or deleted: the repair writes the rebuilt shard over it.
//   - A shard directory deleted under a running store is recreated empty (and logged) by the next walk or
//     Put; what it held is simply absent from List, which is how the pool learns to rebuild it.
package shardstore
