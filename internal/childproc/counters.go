package childproc

import (
	"errors"
	"sync"
	"sync/atomic"
)

// The reasons a child ends during a call, as Counts reports them: a limit
// hit (time, memory, output), the caller canceling, or a crash (the child
// died, or broke the protocol, for a reason of its own).
const (
	ReasonTime     = "time"
	ReasonMemory   = "memory"
	ReasonOutput   = "output"
	ReasonCanceled = "canceled"
	ReasonCrash    = "crash"
)

var reasons = [...]string{ReasonTime, ReasonMemory, ReasonOutput, ReasonCanceled, ReasonCrash}

// Counts are the children of one class (Spec.Class) this process started:
// alive now, started so far, and ended during a call, by reason. A
// worker's metrics read them (internal/metrics' sandbox families).
type Counts struct {
	Alive   int64
	Started uint64
	Ended   map[string]uint64 // by reason; every reason is present
}

// classCounts are one class's counters, updated at a child's start and
// exit and at the end of a call that ended it: never on a call that
// succeeds.
type classCounts struct {
	alive   atomic.Int64
	started atomic.Uint64
	ended   [len(reasons)]atomic.Uint64
}

var classes sync.Map // class name -> *classCounts

func countsOf(class string) *classCounts {
	if class == "" {
		return nil
	}
	if c, ok := classes.Load(class); ok {
		return c.(*classCounts)
	}
	c, _ := classes.LoadOrStore(class, &classCounts{})
	return c.(*classCounts)
}

// Classes returns the counts of every class that started a child in this
// process.
func Classes() map[string]Counts {
	out := map[string]Counts{}
	classes.Range(func(k, v any) bool {
		c := v.(*classCounts)
		n := Counts{Alive: c.alive.Load(), Started: c.started.Load(), Ended: make(map[string]uint64, len(reasons))}
		for i, r := range reasons {
			n.Ended[r] = c.ended[i].Load()
		}
		out[k.(string)] = n
		return true
	})
	return out
}

// ReasonOf names why a call's child ended, from Call's *CallError: "" when
// err is no such error, or the call never reached the child.
func ReasonOf(err error) string {
	var ce *CallError
	if !errors.As(err, &ce) || ce.NotSent() {
		return ""
	}
	switch ce.Sentinel {
	case ErrTimeout:
		return ReasonTime
	case ErrMemoryLimit:
		return ReasonMemory
	case ErrOutputTooLarge:
		return ReasonOutput
	case ErrCanceled:
		return ReasonCanceled
	}
	return ReasonCrash
}

// end counts a child of c ended during a call, for reason.
func (c *classCounts) end(reason string) {
	if c == nil || reason == "" {
		return
	}
	for i, r := range reasons {
		if r == reason {
			c.ended[i].Add(1)
		}
	}
}
