package pool

import (
	"math/rand/v2"
	"time"
)

// pick chooses a worker for a function by power of two choices: of two
// workers drawn at random, the one with fewer outstanding calls from this
// pool (ties broken by the in-flight count the worker last reported). Workers
// in tried are skipped; suspect workers only when nothing else is left.
// It returns false when no worker serves the function.
func pick(routes []route, tried []*worker, now time.Time) (route, bool) {
	var (
		candidates [2]route
		n          int
		fallback   route
		haveSusp   bool
	)
	// Reservoir-sample two eligible routes in one pass, without allocating.
	seen := 0
	for _, r := range routes {
		if contains(tried, r.w) {
			continue
		}
		if r.w.suspect(now) {
			if !haveSusp || rand.IntN(2) == 0 {
				fallback, haveSusp = r, true
			}
			continue
		}
		seen++
		if n < 2 {
			candidates[n] = r
			n++
		} else if j := rand.IntN(seen); j < 2 {
			candidates[j] = r
		}
	}
	switch n {
	case 0:
		return fallback, haveSusp
	case 1:
		return candidates[0], true
	}
	a, b := candidates[0], candidates[1]
	la, lb := a.w.outstanding.Load(), b.w.outstanding.Load()
	if la == lb {
		la, lb = a.w.info.Load().Inflight, b.w.info.Load().Inflight
		if la == lb && rand.IntN(2) == 0 {
			return b, true
		}
	}
	if lb < la {
		return b, true
	}
	return a, true
}

func contains(ws []*worker, w *worker) bool {
	for _, x := range ws {
		if x == w {
			return true
		}
	}
	return false
}
