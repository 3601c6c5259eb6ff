package pool

import (
	"context"
	"math/rand/v2"
	"slices"
	"sync"
	"time"

	"google.golang.org/grpc/codes"
	"google.golang.org/grpc/status"

	"github.com/hivemind/taskworker/internal/quota"
)

// pick chooses a worker for a function by power of two choices: of two
// workers drawn at random, the one with fewer outstanding calls from this
// pool (ties broken by the in-flight count the worker last reported). For a
// deployed function, prefer names its module: a worker that has not compiled
// it counts as busier by coldPenalty calls, and warm, the worker that served
// it last, is always one of the two and wins ties, so that a function's
// calls stay on the worker whose process for it is running while that
// worker is no busier than another (RATIONALE.md, "Why do a deployed
// function's calls stick to a worker?"). Workers in tried are skipped;
// suspect workers only when nothing else is left. It returns false when no
// worker serves the function.
func pick(routes []route, tried []*worker, now time.Time, prefer string, warm *worker) (route, bool) {
	// Fast path, the common case: a first attempt, two healthy draws.
	if n := len(routes); n >= 2 && len(tried) == 0 {
		i := rand.IntN(n)
		if warm != nil {
			if k := slices.IndexFunc(routes, func(r route) bool { return r.w == warm }); k >= 0 {
				i = k
			}
		}
		j := rand.IntN(n - 1)
		if j >= i {
			j++
		}
		if a, b := routes[i], routes[j]; !a.w.suspect(now) && !b.w.suspect(now) {
			if a.w == warm {
				return warmer(a, b, prefer), true
			}
			return lessLoaded(a, b, prefer), true
		}
	}
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
	return lessLoaded(candidates[0], candidates[1], prefer), true
}

// coldPenalty is how many outstanding calls a cold start is worth: a worker
// without the module compiled gets calls only when the warm ones are this
// much busier.
const coldPenalty = 2

// lessLoaded returns the route with fewer outstanding calls from this pool
// (counting a cold start for prefer as coldPenalty), then with fewer
// reported in flight, then either at random.
func lessLoaded(a, b route, prefer string) route {
	la, lb := a.w.outstanding.Load(), b.w.outstanding.Load()
	if prefer != "" {
		la += coldCost(a.w, prefer)
		lb += coldCost(b.w, prefer)
	}
	if la == lb {
		la, lb = a.w.info.Load().Inflight, b.w.info.Load().Inflight
		if la == lb && rand.IntN(2) == 0 {
			return b
		}
	}
	if lb < la {
		return b
	}
	return a
}

// warmer returns warm unless b has fewer outstanding calls (counting cold
// starts as lessLoaded does).
func warmer(warm, b route, prefer string) route {
	la, lb := warm.w.outstanding.Load()+coldCost(warm.w, prefer), b.w.outstanding.Load()+coldCost(b.w, prefer)
	if lb < la {
		return b
	}
	return warm
}

func contains(ws []*worker, w *worker) bool {
	for _, x := range ws {
		if x == w {
			return true
		}
	}
	return false
}

func coldCost(w *worker, module string) int64 {
	if module == "" {
		return 0
	}
	if slices.Contains(w.info.Load().CompiledModules, module) {
		return 0
	}
	return coldPenalty
}

// callCounts counts each user's calls running on this pool, for the Calls
// quota. The count is per pool replica: with N pools, a user may run up to
// N times the quota at once on the network (docs/RATIONALE.md, "Why these
// quotas, checked where they are?").
type callCounts struct {
	mu      sync.Mutex
	running map[string]int64
}

// acquire counts one more call of user, or refuses it with
// ResourceExhausted when the user's Calls quota is reached. Only calls of
// users with a Calls quota are counted (so calls pay for no lock where
// there are no quotas); counted reports whether this one was, and then it
// needs a release.
func (c *callCounts) acquire(ctx context.Context, quotas func(context.Context, string) (quota.Limits, error), user string) (q quota.Limits, counted bool, err error) {
	if quotas == nil {
		return q, false, nil
	}
	q, err = quotas(ctx, user)
	if err != nil {
		return q, false, status.Errorf(codes.Unavailable, "reading the quotas of user %s: %v; try again", user, err)
	}
	if q.Calls <= 0 {
		return q, false, nil
	}
	c.mu.Lock()
	defer c.mu.Unlock()
	if c.running == nil {
		c.running = map[string]int64{}
	}
	if n := c.running[user]; n >= q.Calls {
		return q, false, status.Errorf(codes.ResourceExhausted, "calls quota: user %s has %d calls running on this pool, and the quota allows %d at once; wait for some to finish, or ask an admin to raise it",
			user, n, q.Calls)
	}
	c.running[user]++
	return q, true, nil
}

func (c *callCounts) release(user string) {
	c.mu.Lock()
	defer c.mu.Unlock()
	if c.running[user]--; c.running[user] <= 0 {
		delete(c.running, user)
	}
}
