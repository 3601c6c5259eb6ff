package dnsproxy

import (
	"context"
	"sync"
)

// flights merges concurrent identical upstream queries: the first caller of
// a key runs fn, the others wait for its result. fn runs detached from the
// callers' contexts (bounded by the upstream timeout instead), so a caller
// that gives up does not fail the others who wait for the same answer.
type flights struct {
	mu sync.Mutex
	m  map[cacheKey]*flight
}

type flight struct {
	done chan struct{}
	set  rrset
	err  error
}

// do returns fn's result for k, running fn once for all concurrent callers.
// shared says whether this caller waited for another's query.
func (f *flights) do(ctx context.Context, k cacheKey, fn func() (rrset, error)) (set rrset, shared bool, err error) {
	f.mu.Lock()
	if f.m == nil {
		f.m = make(map[cacheKey]*flight)
	}
	if fl, ok := f.m[k]; ok {
		f.mu.Unlock()
		select {
		case <-fl.done:
			return fl.set, true, fl.err
		case <-ctx.Done():
			return rrset{}, true, ctx.Err()
		}
	}
	fl := &flight{done: make(chan struct{})}
	f.m[k] = fl
	f.mu.Unlock()

	fl.set, fl.err = fn()
	f.mu.Lock()
	delete(f.m, k)
	f.mu.Unlock()
	close(fl.done)
	return fl.set, false, fl.err
}
