package placement

import (
	"errors"
	"fmt"
	"math"
	"math/rand/v2"
	"slices"
	"testing"
)

func workersIn(zones, perZone int) []Worker {
	var ws []Worker
	for z := range zones {
		for i := range perZone {
			ws = append(ws, Worker{ID: fmt.Sprintf("w%d-%d", z, i), Zone: fmt.Sprintf("z%d", z)})
		}
	}
	return ws
}

func without(ws []Worker, id string) []Worker {
	return slices.DeleteFunc(slices.Clone(ws), func(w Worker) bool { return w.ID == id })
}

func zoneOf(ws []Worker) map[string]string {
	m := map[string]string{}
	for _, w := range ws {
		m[w.ID] = w.Zone
	}
	return m
}

func mustPlace(t *testing.T, ws []Worker, file string, block int64, n int) []string {
	t.Helper()
	ids, err := Place(ws, file, block, n)
	if err != nil {
		t.Fatal(err)
	}
	checkDistinct(t, ids)
	return ids
}

func checkDistinct(t *testing.T, ids []string) {
	t.Helper()
	seen := map[string]bool{}
	for _, id := range ids {
		if seen[id] {
			t.Fatalf("worker %s holds two shards of one block: %v", id, ids)
		}
		seen[id] = true
	}
}

func TestPlaceIsDeterministicAndOrderFree(t *testing.T) {
	ws := workersIn(4, 5)
	rng := rand.New(rand.NewPCG(1, 1))
	for b := range int64(200) {
		want := mustPlace(t, ws, "file-a", b, 6)
		shuffled := slices.Clone(ws)
		rng.Shuffle(len(shuffled), func(i, j int) { shuffled[i], shuffled[j] = shuffled[j], shuffled[i] })
		if got := mustPlace(t, shuffled, "file-a", b, 6); !slices.Equal(got, want) {
			t.Fatalf("block %d: %v with shuffled workers, %v before", b, got, want)
		}
	}
}

func TestPlaceSpreadsBlocksAndFiles(t *testing.T) {
	ws := workersIn(1, 10)
	a, b := mustPlace(t, ws, "f", 0, 6), mustPlace(t, ws, "f", 1, 6)
	c := mustPlace(t, ws, "g", 0, 6)
	if slices.Equal(a, b) && slices.Equal(a, c) {
		t.Fatal("different blocks and files got the same placement")
	}
}

func TestPlaceNotEnoughWorkers(t *testing.T) {
	ws := workersIn(1, 4)
	ids, err := Place(ws, "f", 0, 6)
	if !errors.Is(err, ErrNotEnoughWorkers) || len(ids) != 4 {
		t.Fatalf("got %v, %v; want all 4 workers and ErrNotEnoughWorkers", ids, err)
	}
	checkDistinct(t, ids)
}

// TestPlaceStableUnderRemoval: removing a worker changes only the blocks it held, and those by exactly that
// worker.
func TestPlaceStableUnderRemoval(t *testing.T) {
	ws := workersIn(5, 4)
	for _, gone := range []string{"w0-0", "w2-3", "w4-1"} {
		t.Run(gone, func(t *testing.T) {
			after := without(ws, gone)
			moved := 0
			for b := range int64(500) {
				before, now := mustPlace(t, ws, "file", b, 6), mustPlace(t, after, "file", b, 6)
				if !slices.Contains(before, gone) {
					if !slices.Equal(before, now) {
						t.Fatalf("block %d: %v became %v though %s held nothing", b, before, now, gone)
					}
					continue
				}
				moved++
				var added []string
				for _, id := range now {
					if !slices.Contains(before, id) {
						added = append(added, id)
					}
				}
				if len(added) != 1 {
					t.Fatalf("block %d: %v became %v: %d workers changed, want 1", b, before, now, len(added))
				}
			}
			if want := 500 * 6 / 20; moved < want/2 || moved > want*2 {
				t.Fatalf("%s held %d of 500 blocks; expected about %d", gone, moved, want)
			}
		})
	}
}

// TestPlaceAddingWorkerTakesItsShare: a new worker enters about its share of new placements, each time
// displacing one worker.
func TestPlaceAddingWorkerTakesItsShare(t *testing.T) {
	ws := workersIn(1, 11)
	more := append(slices.Clone(ws), Worker{ID: "new", Zone: "z0"})
	changed := 0
	for b := range int64(1200) {
		before, now := mustPlace(t, ws, "f", b, 6), mustPlace(t, more, "f", b, 6)
		if !slices.Contains(now, "new") {
			if !slices.Equal(before, now) {
				t.Fatalf("block %d changed without the new worker: %v -> %v", b, before, now)
			}
			continue
		}
		changed++
	}
	if want := 1200 * 6 / 12; math.Abs(float64(changed-want)) > float64(want)/4 {
		t.Fatalf("new worker entered %d blocks, want about %d", changed, want)
	}
}

func TestPlaceSpreadsOverZones(t *testing.T) {
	for _, tc := range []struct {
		name    string
		workers []Worker
		n       int
		maxZone int // most shards of one block in one zone
	}{
		{"3 zones x 3, 4+2", workersIn(3, 3), 6, 2},
		{"6 zones x 2, 4+2", workersIn(6, 2), 6, 1},
		{"2 zones x 5, 4+2", workersIn(2, 5), 6, 3},
		{"8 zones x 1, 4+2", workersIn(8, 1), 6, 1},
		{"4 zones x 4, 6+3", workersIn(4, 4), 9, 3},
		{"unequal zones", append(workersIn(1, 7), Worker{ID: "lonely", Zone: "far"}), 6, 5},
	} {
		t.Run(tc.name, func(t *testing.T) {
			zone := zoneOf(tc.workers)
			for b := range int64(300) {
				ids := mustPlace(t, tc.workers, "f", b, tc.n)
				count := map[string]int{}
				for _, id := range ids {
					count[zone[id]]++
				}
				for z, c := range count {
					if c > tc.maxZone {
						t.Fatalf("block %d: zone %s holds %d shards, want at most %d: %v", b, z, c, tc.maxZone, ids)
					}
				}
			}
		})
	}
}

func TestPlaceBalancesLoad(t *testing.T) {
	ws := workersIn(2, 5)
	count := map[string]int{}
	const blocks = 3000
	for b := range int64(blocks) {
		for _, id := range mustPlace(t, ws, "balance", b, 6) {
			count[id]++
		}
	}
	want := blocks * 6 / len(ws)
	for id, c := range count {
		if math.Abs(float64(c-want)) > 0.08*float64(want) {
			t.Errorf("worker %s holds %d shards, want %d +- 8%%", id, c, want)
		}
	}
}

// TestWeights: a worker's chance to rank first for a block is its share of the total weight.
func TestWeights(t *testing.T) {
	ws := []Worker{{ID: "a", Weight: 1}, {ID: "b", Weight: 2}, {ID: "c"}, {ID: "d", Weight: 4}}
	count := map[string]int{}
	const blocks = 16000
	for b := range int64(blocks) {
		count[mustPlace(t, ws, "w", b, 1)[0]]++
	}
	for id, w := range map[string]float64{"a": 1, "b": 2, "c": 1, "d": 4} {
		want := blocks * w / 8
		if math.Abs(float64(count[id])-want) > 0.06*want {
			t.Errorf("worker %s first for %d blocks, want %.0f", id, count[id], want)
		}
	}
}

func TestPlanRepair(t *testing.T) {
	ws := workersIn(3, 3) // z0: w0-0..2, z1: w1-*, z2: w2-*
	zone := zoneOf(ws)
	current := mustPlace(t, ws, "f", 7, 6)

	t.Run("all live: nothing to do", func(t *testing.T) {
		plan, err := PlanRepair(ws, "f", 7, current, nil)
		if err != nil || len(plan.Rebuild) != 0 || len(plan.Unplaceable) != 0 {
			t.Fatalf("got %+v, %v", plan, err)
		}
	})
	t.Run("lost worker: only its shard moves, within its zone's share", func(t *testing.T) {
		gone := current[2]
		plan, err := PlanRepair(without(ws, gone), "f", 7, current, nil)
		if err != nil || len(plan.Rebuild) != 1 || plan.Rebuild[0].Shard != 2 || len(plan.Unplaceable) != 0 {
			t.Fatalf("got %+v, %v", plan, err)
		}
		to := plan.Rebuild[0].To
		if slices.Contains(current, to) {
			t.Fatalf("rebuilt on %s, which already holds a shard", to)
		}
		if zone[to] != zone[gone] {
			t.Fatalf("rebuilt in zone %s; only zone %s had room under the cap", zone[to], zone[gone])
		}
	})
	t.Run("damaged on live worker: rebuilt in place", func(t *testing.T) {
		plan, err := PlanRepair(ws, "f", 7, current, []int{0, 5})
		want := []Rebuild{{0, current[0]}, {5, current[5]}}
		if err != nil || !slices.Equal(plan.Rebuild, want) {
			t.Fatalf("got %+v, %v; want %v", plan, err, want)
		}
	})
	t.Run("damaged on gone worker: moved once", func(t *testing.T) {
		plan, _ := PlanRepair(without(ws, current[1]), "f", 7, current, []int{1})
		if len(plan.Rebuild) != 1 || plan.Rebuild[0].Shard != 1 || plan.Rebuild[0].To == current[1] {
			t.Fatalf("got %+v", plan)
		}
	})
	t.Run("unknown locations are placed", func(t *testing.T) {
		partial := slices.Clone(current)
		partial[3], partial[4] = "", ""
		plan, _ := PlanRepair(ws, "f", 7, partial, nil)
		if len(plan.Rebuild) != 2 || plan.Rebuild[0].Shard != 3 || plan.Rebuild[1].Shard != 4 {
			t.Fatalf("got %+v", plan)
		}
		checkDistinct(t, append(slices.Clone(partial[:3]), partial[5], plan.Rebuild[0].To, plan.Rebuild[1].To))
	})
	t.Run("two shards on one worker: the second moves", func(t *testing.T) {
		dup := slices.Clone(current)
		dup[4] = dup[1]
		plan, _ := PlanRepair(ws, "f", 7, dup, nil)
		if len(plan.Rebuild) != 1 || plan.Rebuild[0].Shard != 4 || slices.Contains(dup, plan.Rebuild[0].To) {
			t.Fatalf("got %+v", plan)
		}
	})
	t.Run("too few workers: unplaceable", func(t *testing.T) {
		six := []Worker{}
		for _, id := range current {
			six = append(six, Worker{ID: id, Zone: zone[id]})
		}
		plan, err := PlanRepair(without(without(six, current[0]), current[3]), "f", 7, current, nil)
		if err != nil || len(plan.Rebuild) != 0 || !slices.Equal(plan.Unplaceable, []int{0, 3}) {
			t.Fatalf("got %+v, %v", plan, err)
		}
	})
	t.Run("churn: repeated losses never move a live shard", func(t *testing.T) {
		live := workersIn(4, 4)
		loc := mustPlace(t, live, "churn", 3, 6)
		rng := rand.New(rand.NewPCG(2, 2))
		for range 8 {
			victim := live[rng.IntN(len(live))].ID
			live = without(live, victim)
			plan, err := PlanRepair(live, "churn", 3, loc, nil)
			if err != nil {
				t.Fatal(err)
			}
			next := slices.Clone(loc)
			for _, r := range plan.Rebuild {
				if zoneOf(live)[loc[r.Shard]] != "" {
					t.Fatalf("shard %d on live worker %s was moved", r.Shard, loc[r.Shard])
				}
				next[r.Shard] = r.To
			}
			checkDistinct(t, next)
			loc = next
		}
	})
}

func TestPlanRepairAgreesWithPlace(t *testing.T) {
	ws := workersIn(3, 4)
	for b := range int64(50) {
		want := mustPlace(t, ws, "x", b, 6)
		plan, err := PlanRepair(ws, "x", b, make([]string, 6), nil)
		if err != nil {
			t.Fatal(err)
		}
		for i, r := range plan.Rebuild {
			if r.Shard != i || r.To != want[i] {
				t.Fatalf("block %d: plan %+v, Place %v", b, plan.Rebuild, want)
			}
		}
	}
}

func TestInvalidInput(t *testing.T) {
	for name, tc := range map[string]struct {
		workers []Worker
		damaged []int
	}{
		"empty ID":        {[]Worker{{ID: ""}}, nil},
		"duplicate ID":    {[]Worker{{ID: "a"}, {ID: "a", Zone: "z"}}, nil},
		"negative weight": {[]Worker{{ID: "a", Weight: -1}}, nil},
		"NaN weight":      {[]Worker{{ID: "a", Weight: math.NaN()}}, nil},
		"infinite weight": {[]Worker{{ID: "a", Weight: math.Inf(1)}}, nil},
		"damaged too big": {[]Worker{{ID: "a"}}, []int{6}},
		"damaged < 0":     {[]Worker{{ID: "a"}}, []int{-1}},
	} {
		t.Run(name, func(t *testing.T) {
			if _, err := PlanRepair(tc.workers, "f", 0, make([]string, 6), tc.damaged); err == nil {
				t.Fatal("accepted")
			}
		})
	}
	if _, err := Place(nil, "f", 0, -1); err == nil {
		t.Fatal("Place accepted a negative shard count")
	}
	if ids, err := Place(nil, "f", 0, 0); err != nil || len(ids) != 0 {
		t.Fatalf("Place of 0 shards: %v, %v", ids, err)
	}
	if ids, err := Place(nil, "f", 0, 6); !errors.Is(err, ErrNotEnoughWorkers) || len(ids) != 0 {
		t.Fatalf("Place with no workers: %v, %v", ids, err)
	}
}

func ExamplePlace() {
	workers := []Worker{
		{ID: "a1", Zone: "a"}, {ID: "a2", Zone: "a"}, {ID: "a3", Zone: "a"},
		{ID: "b1", Zone: "b"}, {ID: "b2", Zone: "b"}, {ID: "b3", Zone: "b"},
		{ID: "c1", Zone: "c"}, {ID: "c2", Zone: "c"}, {ID: "c3", Zone: "c"},
	}
	shards, _ := Place(workers, "file-1", 0, 6) // 4+2: two shards per zone
	fmt.Println(len(shards))

	gone := shards[0]
	live := slices.DeleteFunc(slices.Clone(workers), func(w Worker) bool { return w.ID == gone })
	plan, _ := PlanRepair(live, "file-1", 0, shards, nil)
	fmt.Println(len(plan.Rebuild), plan.Rebuild[0].Shard, plan.Rebuild[0].To[0] == gone[0])
	// Output:
	// 6
	// 1 0 true
}

// BenchmarkPlace is the cost per block of choosing 4+2 among 100 workers in 5 zones.
func BenchmarkPlace(b *testing.B) {
	ws := workersIn(5, 20)
	var block int64
	for b.Loop() {
		if _, err := Place(ws, "file", block, 6); err != nil {
			b.Fatal(err)
		}
		block++
	}
}
