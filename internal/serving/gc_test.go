package serving

import (
	"os"
	"runtime"
	"runtime/debug"
	"testing"
	"time"
)

func TestGCPercent(t *testing.T) {
	for _, tt := range []struct {
		live uint64
		want int
	}{
		{0, maxGCPercent},
		{1 << 20, maxGCPercent},       // 6400% capped
		{8 << 20, 800},                // 64 MiB of headroom on 8 MiB
		{64 << 20, 100},               // the default once the live heap is the headroom
		{1 << 30, 100},                // and above: never under the default
		{GCHeadroom * 100 / 150, 150}, // between
	} {
		if got := gcPercent(tt.live); got != tt.want {
			t.Errorf("gcPercent(%d) = %d, want %d", tt.live, got, tt.want)
		}
	}
}

// After a collection the process's target is the one its live heap gives
// (this test's heap is small, so above the default).
func TestTuneGCSetsTheTargetAfterEachCollection(t *testing.T) {
	if os.Getenv("GOGC") != "" {
		t.Skip("GOGC is set: TuneGC leaves the target alone")
	}
	defer debug.SetGCPercent(debug.SetGCPercent(100))
	TuneGC()
	debug.SetGCPercent(100) // what a collection is to change
	runtime.GC()
	var got int
	for deadline := time.Now().Add(30 * time.Second); time.Now().Before(deadline); time.Sleep(time.Millisecond) {
		got = debug.SetGCPercent(100) // read, leaving 100 for the next check
		if got > 100 {
			return
		}
		runtime.GC() // the finalizer sets it again after this one
	}
	t.Fatalf("GC percent %d after collections, want above 100 for a small heap", got)
}
