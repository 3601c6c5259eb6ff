// Package placement decides which workers hold the shards of a block, and where lost shards are rebuilt.
//
// It is pure computation, the same on every pool replica: rendezvous (highest random weight) hashing of
// (file, block) against each worker's ID, weighted by Worker.Weight, spread over Worker.Zone so that no
// zone holds more than its share of a block's shards while other zones have room. The types are few:
// Worker (ID, zone, weight); Place, which picks k+m distinct workers for a new block; and PlanRepair, which
// takes a block's recorded locations and the live workers and returns a Plan of Rebuild steps.
//
// # Caveats
//
//   - Place's answer must be recorded (in the manifest): shard i goes to the i-th worker of the answer, and
//     when a chosen worker leaves, the later workers of a fresh answer shift by one index. Repair therefore
//     starts from the recorded locations (PlanRepair), never from a fresh Place.
//   - Zone spreading caps a zone at ceil(shards/zones) per block. With 4+2 over three zones that is two
//     shards, so a lost zone leaves four shards: readable. Over two zones it is three: a lost zone loses the
//     block. More zones than Parity divides into is needed for zone-loss tolerance; Place does not refuse
//     fewer.
//   - Shards never share a worker. When fewer live workers remain than a block has shards (six workers at
//     4+2, one lost), PlanRepair reports the surplus as Unplaceable and the block stays at reduced
//     redundancy until a worker joins.
//   - Adding a worker does not move existing shards (PlanRepair leaves live locations alone); new blocks use
//     it at once. Rebalancing old blocks is a separate, deliberate operation.
package placement
