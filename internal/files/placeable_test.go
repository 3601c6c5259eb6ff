package files

import (
	"fmt"
	"slices"
	"testing"
	"time"

	"github.com/hivemind/taskworker/internal/placement"
)

// drainedWorkers is a Workers whose drained set is given.
type drainedWorkers struct {
	noWorkers
	drained []string
}

func (d drainedWorkers) Draining(id string) bool { return slices.Contains(d.drained, id) }

// TestPlaceableLeavesOutDrainedWorkers: a drained worker takes no new
// shards while the others give new files a layout as safe, keeps those it
// holds (keep), and takes new ones when leaving it out would make files
// tolerate fewer losses. A full worker is left out as before.
func TestPlaceableLeavesOutDrainedWorkers(t *testing.T) {
	ws := func(n int) []placement.Worker {
		out := make([]placement.Worker, n)
		for i := range out {
			out[i] = placement.Worker{ID: fmt.Sprintf("w%d", i+1)}
		}
		return out
	}
	for _, tc := range []struct {
		name    string
		workers int
		drained []string
		full    []string
		keep    []string
		want    int      // placeable workers
		absent  []string // of them
	}{
		{"none drained", 7, nil, nil, nil, 7, nil},
		{"seven, one drained: 4+2 on the other six", 7, []string{"w1"}, nil, nil, 6, []string{"w1"}},
		{"six, one drained: 3+2 on the other five, as safe", 6, []string{"w1"}, nil, nil, 5, []string{"w1"}},
		{"four, one drained: 2+1 would tolerate one loss, not two", 4, []string{"w1"}, nil, nil, 4, nil},
		{"a drained worker keeps its shard", 7, []string{"w1"}, nil, []string{"w1"}, 7, nil},
		{"drained and full", 7, []string{"w1"}, []string{"w2"}, nil, 5, []string{"w1", "w2"}},
		{"all drained", 3, []string{"w1", "w2", "w3"}, nil, nil, 3, nil},
	} {
		t.Run(tc.name, func(t *testing.T) {
			s := &Service{workers: drainedWorkers{drained: tc.drained}}
			for _, id := range tc.full {
				s.full.Store(id, time.Now().Add(time.Hour))
			}
			got := s.placeable(ws(tc.workers), tc.keep)
			if len(got) != tc.want {
				t.Errorf("%d placeable workers %v, want %d", len(got), got, tc.want)
			}
			for _, w := range got {
				if slices.Contains(tc.absent, w.ID) {
					t.Errorf("%s is placeable", w.ID)
				}
			}
		})
	}
}
