// Package erasure cuts a file into blocks and Reed-Solomon codes each block into shards, so that any
// Layout.Data of a block's Layout.Shards() shards give the block back.
//
// Everything streams: an Encoder reads an io.Reader one block at a time and hands out each block's shards
// with their checksums; a Decoder writes a file, or any byte range of it, to an io.Writer, fetching only the
// shards of the blocks in the range through a ShardSource. A 10 GiB file is never in memory; one block is.
//
// The types are few:
//   - Layout: k data + m parity shards per block, printed "4+2"; LayoutFor picks one from the number of
//     workers, ParseLayout reads one.
//   - FileInfo: what a reader needs besides the shards (layout, block size, size, SHA-256 of the file, a
//     Sum per shard); the manifest stores it.
//   - Sum: BLAKE3-256 of one shard.
//   - Encoder, Block: the write side; Coder codes blocks in place in buffers its caller fills (a sealed
//     block), for a writer that keeps the shards past the next block and needs no copy of them.
//   - Decoder, ShardSource, BadShard, BlockError: the read and repair side.
//
// A Decoder checks every shard against its Sum before using it (Reed-Solomon cannot tell a bad shard from
// a good one), asks for the data shards first (no decoding when they are intact), replaces a missing or bad
// shard by the next parity shard, and reports each bad shard through OnBadShard so it can be repaired.
// Decoder.Rebuild recomputes chosen shards of a block for repair and checks them against their Sums.
//
// The reasons for the block size, the checksum and the layout table are in docs/RATIONALE.md.
//
// # Caveats
//
//   - Whole-file SHA-256 is checked by Decoder.Copy only after the bytes have been written to w: a caller
//     that must not expose unverified bytes buffers or discards on error. Every shard is verified before
//     use, so a mismatch there means the FileInfo is wrong, not a shard.
//   - A range read fetches whole shards (a shard's Sum covers all of it): reading one byte costs one block.
//   - The Decoder reads one block at a time with its k fetches in parallel; it does not prefetch the next
//     block. A ShardSource over the network that wants more overlap can prefetch itself.
//   - ShardSource.ReadShard must return when its context is done: the Decoder waits for every fetch it
//     started.
//   - FileInfo holds one 32-byte Sum per shard: 240 KiB for 10 GiB in 8 MiB blocks at 4+2. A manifest store
//     with a request limit (etcd: 1.5 MiB) must split the Sums of very large files.
//   - 1+0 (one worker) has no redundancy at all; Layout.Tolerates() says so and the caller decides whether
//     to accept writes.
package erasure
