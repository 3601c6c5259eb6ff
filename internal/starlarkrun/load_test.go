package starlarkrun

import (
	"testing"
	"time"
)

// TestCallerLoad walks callerLoad through the cases its documentation names,
// on a clock of its own.
func TestCallerLoad(t *testing.T) {
	now := time.Unix(1000, 0)
	c := newCallerLoad(10 * time.Millisecond)
	c.now = func() time.Time { return now }
	class := func(caller string) (bool, time.Duration, func()) { return c.begin(caller) }
	check := func(step, caller string, wantNow bool, wantAfter time.Duration) func() {
		t.Helper()
		idleNow, idleAfter, end := class(caller)
		if idleNow != wantNow || idleAfter != wantAfter {
			t.Errorf("%s: %s's call: idle now %v, after %v; want %v, %v", step, caller, idleNow, idleAfter, wantNow, wantAfter)
		}
		return end
	}

	// Eve alone: never moved, however much she runs.
	var eve []func()
	for range 3 {
		eve = append(eve, check("eve alone", "eve", false, 0))
	}
	now = now.Add(3 * loadWindow) // her average nears 3

	// Bob arrives: light, so his calls go idle only if they compute long;
	// eve, heavy, now runs idle from the start.
	endBob := check("bob beside eve", "bob", false, 10*time.Millisecond)
	check("eve beside bob", "eve", true, 0)()
	endBob()

	// Eve stops; bob's calls while her average decays still see her.
	for _, end := range eve {
		end()
	}
	now = now.Add(loadWindow)
	check("bob after eve stopped", "bob", false, 10*time.Millisecond)()
	// Long after, she is forgotten and bob is alone again.
	now = now.Add(10 * loadWindow)
	check("bob long after", "bob", false, 0)()
	c.mu.Lock()
	_, known := c.callers["eve"]
	c.mu.Unlock()
	if known {
		t.Errorf("eve is still tracked long after her calls ended")
	}

	// Two heavy users both run idle.
	a1, a2 := check("ann", "ann", false, 0), check("ann", "ann", false, 0)
	now = now.Add(3 * loadWindow)
	b1, b2 := check("ben beside ann", "ben", false, 10*time.Millisecond), check("ben beside ann", "ben", false, 10*time.Millisecond)
	now = now.Add(3 * loadWindow)
	check("ann, heavy, beside ben", "ann", true, 0)()
	check("ben, heavy, beside ann", "ben", true, 0)()
	for _, end := range []func(){a1, a2, b1, b2} {
		end()
	}

	// IdleAfter 0 turns it off.
	off := newCallerLoad(0)
	if idleNow, idleAfter, _ := off.begin("x"); idleNow || idleAfter != 0 {
		t.Errorf("with IdleAfter 0: idle now %v, after %v", idleNow, idleAfter)
	}
}
