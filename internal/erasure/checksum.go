package erasure

import (
	"encoding/hex"
	"sync"

	"github.com/zeebo/blake3"
)

// Sum is the checksum of one shard: BLAKE3-256 of its bytes. The manifest records one Sum per shard, and a
// reader checks every shard it receives against it before using it. A cryptographic hash rather than a CRC,
// because shards come from workers, and a compromised worker can forge a CRC for any bytes it likes but cannot
// forge a BLAKE3 sum; see docs/RATIONALE.md ("Why BLAKE3 per shard?").
type Sum [32]byte

// SumShard returns the checksum of a shard's bytes.
func SumShard(shard []byte) Sum { return blake3.Sum256(shard) }

// String returns the sum in hexadecimal.
func (s Sum) String() string { return hex.EncodeToString(s[:]) }

// parallelSumMin is the shard length from which sumShards hashes shards concurrently; below it, starting
// goroutines costs more than it saves.
const parallelSumMin = 128 << 10

// sumShards sets sums[i] to the checksum of shards[i].
func sumShards(sums []Sum, shards [][]byte) {
	if len(shards) < 2 || len(shards[0]) < parallelSumMin {
		for i, s := range shards {
			sums[i] = SumShard(s)
		}
		return
	}
	var wg sync.WaitGroup
	for i, s := range shards {
		wg.Go(func() { sums[i] = SumShard(s) })
	}
	wg.Wait()
}
