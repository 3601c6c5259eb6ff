package serving

import (
	"os"
	"runtime"
	"runtime/debug"
	"runtime/metrics"
	"sync"
)

// GCHeadroom is how far a server process's heap may grow past its live
// heap before the garbage collector runs, at the least: the collector's
// own default lets it grow by the live heap (GOGC=100).
const GCHeadroom = 64 << 20

// maxGCPercent bounds the target TuneGC sets, for a nearly empty heap.
const maxGCPercent = 2000

var tuneGC sync.Once

// TuneGC lets the heap of this process grow by at least GCHeadroom
// between collections, and by the live heap when that is larger: after
// every collection it sets the collector's target (debug.SetGCPercent) from
// the live heap then. A pool's or a worker's live heap is a few MiB while
// every call allocates, so with the default target the collector ran ten
// times a second under load, for a third of the pool's CPU (RATIONALE.md,
// "What did the pool hop's second round cut?"). A process run with
// GOGC set keeps the operator's target; GOMEMLIMIT still bounds the heap.
// Calls after the first do nothing.
func TuneGC() {
	tuneGC.Do(func() {
		if os.Getenv("GOGC") != "" {
			return
		}
		retune()
	})
}

// gcSentinel is garbage as soon as it is made: its finalizer runs after the
// next collection, retunes, and makes the next one.
type gcSentinel struct{ _ *byte } // a pointer: never in a tiny block, whose finalizers may not run

var liveHeap = []metrics.Sample{{Name: "/gc/heap/live:bytes"}}

func retune() {
	metrics.Read(liveHeap)
	if liveHeap[0].Value.Kind() == metrics.KindUint64 {
		debug.SetGCPercent(gcPercent(liveHeap[0].Value.Uint64()))
	}
	runtime.SetFinalizer(&gcSentinel{}, func(*gcSentinel) { retune() })
}

// gcPercent is the target that lets a live heap of live bytes grow by
// GCHeadroom, or double when that is more.
func gcPercent(live uint64) int {
	if live == 0 {
		return maxGCPercent
	}
	return int(min(max(100, GCHeadroom*100/live), maxGCPercent))
}
