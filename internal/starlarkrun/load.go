package starlarkrun

import (
	"math"
	"sync"
	"time"
)

// callerLoad decides which calls run in the idle CPU class
// (docs/RATIONALE.md, "Why do long calls drop to the idle class?"). It keeps,
// per calling user, a decayed average of the calls that user had running
// (queued for a child or in one) over about the last loadWindow: the CPUs
// the user keeps busy, on a worker whose calls compute.
//
// A call's class is chosen when it starts:
//   - no other user had calls here recently: normal, whatever it does (a
//     user alone on a worker competes with no one, and the idle class would
//     only expose it to everything else on the machine);
//   - its user keeps a CPU's worth busy (heavy): idle from the start, so a
//     user flooding the worker with short calls yields to the others as a
//     spinning one does;
//   - otherwise: normal, and idle once it has computed for idleAfter.
//
// Two heavy users both run idle and share the CPU between them as before;
// a light user's calls take it from them at once.
type callerLoad struct {
	idleAfter time.Duration // 0: no call is ever moved
	now       func() time.Time

	mu      sync.Mutex
	callers map[string]*load
}

// loadWindow is the time constant of the decayed averages.
const loadWindow = time.Second

// heavyLoad is the average of running calls from which a user is heavy.
const heavyLoad = 1.0

// load is one user's.
type load struct {
	avg     float64 // decayed average of running, up to last
	running int
	last    time.Time
}

// advance brings l's average to now: running was constant since last.
func (l *load) advance(now time.Time) {
	if dt := now.Sub(l.last); dt > 0 {
		keep := math.Exp(-dt.Seconds() / loadWindow.Seconds())
		l.avg = l.avg*keep + float64(l.running)*(1-keep)
		l.last = now
	}
}

func newCallerLoad(idleAfter time.Duration) *callerLoad {
	return &callerLoad{idleAfter: max(0, idleAfter), now: time.Now, callers: map[string]*load{}}
}

// begin counts a call of caller as running and returns its class: idle from
// the start, or idle once it has computed for idleAfter (0: never). end
// counts it as ended.
func (c *callerLoad) begin(caller string) (idleNow bool, idleAfter time.Duration, end func()) {
	if c.idleAfter == 0 {
		return false, 0, func() {}
	}
	now := c.now()
	c.mu.Lock()
	defer c.mu.Unlock()
	others := false
	for id, l := range c.callers {
		l.advance(now)
		switch {
		case id == caller:
		case l.running > 0 || l.avg >= 0.01:
			others = true
		case l.avg < 0.001:
			delete(c.callers, id) // gone quiet
		}
	}
	me := c.callers[caller]
	if me == nil {
		me = &load{last: now}
		c.callers[caller] = me
	}
	switch {
	case !others:
	case me.avg >= heavyLoad:
		idleNow = true
	default:
		idleAfter = c.idleAfter
	}
	me.running++
	return idleNow, idleAfter, func() {
		now := c.now()
		c.mu.Lock()
		defer c.mu.Unlock()
		me.advance(now) // a user with calls running is never forgotten
		me.running--
	}
}
