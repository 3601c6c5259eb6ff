package placement

import (
	"cmp"
	"errors"
	"fmt"
	"hash/fnv"
	"math"
	"slices"
)

// Worker is a node that can hold shards.
type Worker struct {
	ID     string  // unique, stable across restarts
	Zone   string  // failure domain (rack, host, availability zone); "" is a zone like any other
	Weight float64 // relative share of shards, e.g. proportional to free disk; 0 means 1
}

var (
	// ErrWorkers is returned (wrapped) for a worker set that cannot be used: empty or duplicate IDs,
	// negative or non-finite weights.
	ErrWorkers = errors.New("placement: invalid worker set")
	// ErrNotEnoughWorkers is returned (wrapped) when fewer distinct workers exist than shards to place.
	ErrNotEnoughWorkers = errors.New("placement: not enough workers")
)

// Place chooses n distinct workers for the shards of block `block` of file fileID, by rendezvous hashing
// spread over zones: shard i goes to the i-th returned worker ID. The same inputs give the same answer on
// every pool replica. A worker's rank for a block does not depend on the other workers, so removing a worker
// outside the answer leaves it unchanged, and removing one inside it swaps that one worker for the next in
// rank. The writer records the answer in the manifest; from then on PlanRepair, which moves only the shards
// of gone workers, keeps it current. With fewer than n workers Place returns them all, in shard order, and
// an error wrapping ErrNotEnoughWorkers.
func Place(workers []Worker, fileID string, block int64, n int) ([]string, error) {
	if n < 0 {
		return nil, fmt.Errorf("placement: %d shards", n)
	}
	plan, err := PlanRepair(workers, fileID, block, make([]string, n), nil)
	if err != nil {
		return nil, err
	}
	ids := make([]string, 0, n)
	for _, r := range plan.Rebuild {
		ids = append(ids, r.To)
	}
	if len(plan.Unplaceable) > 0 {
		return ids, fmt.Errorf("%w: %d shards need %d distinct workers, %d are available",
			ErrNotEnoughWorkers, n, n, len(workers))
	}
	return ids, nil
}

// Rebuild says: rebuild shard Shard of the block on worker To.
type Rebuild struct {
	Shard int
	To    string
}

// Plan is what repair must do for one block.
type Plan struct {
	Rebuild     []Rebuild // in shard order
	Unplaceable []int     // shards that need rebuilding but have no distinct worker to go to
}

// PlanRepair says which shards of a block to rebuild and where. current[i] is the ID of the worker holding
// shard i ("" if none); damaged lists shards whose copy is known bad (failed checksum, scrubber report).
//
//   - A shard whose worker is live and holds no lower-numbered shard of the block stays where it is.
//   - A damaged shard on a live worker is rebuilt in place: nothing moves.
//   - A shard whose worker is gone (or also holds a lower-numbered shard) is rebuilt on a live worker
//     holding no other shard of the block, chosen as Place would, spreading over zones.
//
// Shards that cannot go anywhere (fewer live workers than shards) are listed in Unplaceable; the block stays
// at reduced redundancy until workers join and PlanRepair is run again.
func PlanRepair(workers []Worker, fileID string, block int64, current []string, damaged []int) (Plan, error) {
	if err := validate(workers); err != nil {
		return Plan{}, err
	}
	live := make(map[string]*Worker, len(workers))
	for i := range workers {
		live[workers[i].ID] = &workers[i]
	}
	rebuild := make([]bool, len(current))
	for _, i := range damaged {
		if i < 0 || i >= len(current) {
			return Plan{}, fmt.Errorf("placement: damaged shard %d of a %d-shard block", i, len(current))
		}
		rebuild[i] = true
	}

	used := map[string]bool{}
	perZone := map[string]int{}
	var plan Plan
	var lost []int
	for i, id := range current {
		w, ok := live[id]
		if !ok || used[id] {
			lost = append(lost, i)
			continue
		}
		used[id] = true
		perZone[w.Zone]++
		if rebuild[i] {
			plan.Rebuild = append(plan.Rebuild, Rebuild{Shard: i, To: id})
		}
	}
	if len(lost) == 0 || len(workers) == 0 {
		plan.Unplaceable = lost
		return plan, nil
	}

	zones := map[string]bool{}
	for _, w := range workers {
		zones[w.Zone] = true
	}
	// At most ceil(n/zones) shards per zone while other zones have room; then anywhere (zones of unequal
	// size). With at least as many zones as shards every shard is in its own zone.
	zoneCap := (len(current) + len(zones) - 1) / len(zones)
	ranked := rank(workers, fileID, block)
	for _, capped := range []bool{true, false} {
		for _, w := range ranked {
			if len(lost) == 0 {
				break
			}
			if used[w.ID] || (capped && perZone[w.Zone] >= zoneCap) {
				continue
			}
			used[w.ID] = true
			perZone[w.Zone]++
			plan.Rebuild = append(plan.Rebuild, Rebuild{Shard: lost[0], To: w.ID})
			lost = lost[1:]
		}
	}
	plan.Unplaceable = lost
	slices.SortFunc(plan.Rebuild, func(a, b Rebuild) int { return cmp.Compare(a.Shard, b.Shard) })
	return plan, nil
}

func validate(workers []Worker) error {
	seen := make(map[string]bool, len(workers))
	for _, w := range workers {
		switch {
		case w.ID == "":
			return fmt.Errorf("%w: a worker has an empty ID", ErrWorkers)
		case seen[w.ID]:
			return fmt.Errorf("%w: worker ID %q appears twice", ErrWorkers, w.ID)
		case w.Weight < 0 || math.IsNaN(w.Weight) || math.IsInf(w.Weight, 0):
			return fmt.Errorf("%w: worker %q has weight %v; use a finite weight >= 0 (0 means 1)", ErrWorkers, w.ID, w.Weight)
		}
		seen[w.ID] = true
	}
	return nil
}

// rank orders workers by their rendezvous score for (fileID, block), best first. The score is weighted
// rendezvous hashing: -weight/ln(u) with u uniform in (0,1) from a hash of (worker, file, block), so a
// worker's chance of ranking first is its share of the total weight, and a worker's score never depends
// on which other workers exist: that is what makes placement stable under churn.
func rank(workers []Worker, fileID string, block int64) []Worker {
	key := mix(hashString(fileID) ^ mix(uint64(block)+0x9e3779b97f4a7c15))
	type scored struct {
		score float64
		w     Worker
	}
	s := make([]scored, len(workers))
	for i, w := range workers {
		weight := w.Weight
		if weight == 0 {
			weight = 1
		}
		h := mix(key ^ hashString(w.ID))
		u := (float64(h>>11) + 0.5) / (1 << 53) // uniform in (0,1), never 0 or 1
		s[i] = scored{score: -weight / math.Log(u), w: w}
	}
	slices.SortFunc(s, func(a, b scored) int {
		if c := cmp.Compare(b.score, a.score); c != 0 {
			return c
		}
		return cmp.Compare(a.w.ID, b.w.ID)
	})
	out := make([]Worker, len(s))
	for i := range s {
		out[i] = s[i].w
	}
	return out
}

func hashString(s string) uint64 {
	h := fnv.New64a()
	h.Write([]byte(s))
	return h.Sum64()
}

// mix is the SplitMix64 finalizer: FNV alone barely separates IDs like "w1" and "w2".
func mix(x uint64) uint64 {
	x ^= x >> 30
	x *= 0xbf58476d1ce4e5b9
	x ^= x >> 27
	x *= 0x94d049bb133111eb
	x ^= x >> 31
	return x
}
