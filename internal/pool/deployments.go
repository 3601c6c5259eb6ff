package pool

import (
	"context"
	"encoding/json"
	"slices"
	"strings"
	"sync"
	"sync/atomic"
	"time"

	clientv3 "go.etcd.io/etcd/client/v3"
	"google.golang.org/protobuf/proto"

	v1 "github.com/hivemind/taskworker/api/taskworker/v1"
	"github.com/hivemind/taskworker/internal/etcdwatch"
)

// deployments is every pool's view of the deployed functions: the current
// version of each, and who each is granted to, kept by watches. Both maps
// are keyed by "owner/name": each user has a namespace of their own
// (docs/RATIONALE.md, "Why one namespace per user?").
type deployments struct {
	current view[*v1.Deployment]
	grants  view[[]string]
}

func (d *deployments) run(ctx context.Context, cli *clientv3.Client, prefix string, ready chan<- struct{}) {
	currentReady, grantsReady := make(chan struct{}), make(chan struct{})
	var wg sync.WaitGroup
	wg.Go(func() {
		d.current.run(ctx, cli, prefix+"current/", func(b []byte) (*v1.Deployment, bool) {
			dep := &v1.Deployment{}
			return dep, proto.Unmarshal(b, dep) == nil
		}, currentReady)
	})
	wg.Go(func() {
		d.grants.run(ctx, cli, prefix+"grants/", func(b []byte) ([]string, bool) {
			var g grantRecord
			return g.Users, json.Unmarshal(b, &g) == nil
		}, grantsReady)
	})
	for _, r := range []chan struct{}{currentReady, grantsReady} {
		select {
		case <-r:
		case <-ctx.Done():
		}
	}
	close(ready)
	wg.Wait()
}

// grantRecord is the value of deploy/grants/<owner>/<name>.
type grantRecord struct {
	Users []string `json:"users"` // sorted
}

func fullName(owner, name string) string { return owner + "/" + name }

func (d *deployments) get(owner, name string) *v1.Deployment {
	return d.current.get(fullName(owner, name))
}

// all returns the current version of every deployed function, by
// "owner/name".
func (d *deployments) all() map[string]*v1.Deployment { return d.current.all() }

// named returns a deployment of name by any owner, if there is one: a
// native function may not take a name any user deployed.
func (d *deployments) named(name string) *v1.Deployment {
	for _, dep := range d.current.all() {
		if dep.Name == name {
			return dep
		}
	}
	return nil
}

// mayCall reports whether the caller may call (and see) a deployed
// function: its owner, an admin, anyone if it is public, the users it is
// granted to. user is the user the request acts for.
func (d *deployments) mayCall(id identity, user string, dep *v1.Deployment) bool {
	if id.Role == v1.Role_ROLE_ADMIN || user == dep.Owner || dep.Public {
		return true
	}
	_, granted := slices.BinarySearch(d.grants.get(fullName(dep.Owner, dep.Name)), user)
	return granted
}

// mayChange reports whether the caller may change a deployed function
// (rollback, undeploy, grant) or read its history: its owner or an admin.
func mayChange(id identity, user string, dep *v1.Deployment) bool {
	return id.Role == v1.Role_ROLE_ADMIN || user == dep.Owner
}

// waitFor waits until this pool's view of current versions includes etcd
// revision rev, so that a deploy, rollback or undeploy is in effect on the
// pool that answered it before the caller hears so.
func (d *deployments) waitFor(ctx context.Context, rev int64) {
	ctx, cancel := context.WithTimeout(ctx, 5*time.Second)
	defer cancel()
	d.current.waitFor(ctx, rev)
}

// waitForGrants is waitFor for a grant or a revocation.
func (d *deployments) waitForGrants(ctx context.Context, rev int64) {
	ctx, cancel := context.WithTimeout(ctx, 5*time.Second)
	defer cancel()
	d.grants.waitFor(ctx, rev)
}

// view is a map of the keys under one etcd prefix, kept by a watch.
type view[T any] struct {
	m atomic.Pointer[map[string]T]

	mu      sync.Mutex
	rev     int64         // the etcd revision m reflects
	changed chan struct{} // closed and replaced when rev moves
}

func (v *view[T]) get(key string) T {
	var zero T
	m := v.m.Load()
	if m == nil {
		return zero
	}
	return (*m)[key]
}

func (v *view[T]) all() map[string]T {
	if m := v.m.Load(); m != nil {
		return *m
	}
	return nil
}

// waitFor waits until the view includes etcd revision rev, or ctx ends (the
// watch lags; other pools are eventual anyway). A view moves only with
// changes under its own prefix, so it reaches rev only when the change at
// rev was its own: a revision that touched none of its keys leaves it
// behind, and waitFor then waits for ctx: callers wait only for revisions
// that changed the view.
func (v *view[T]) waitFor(ctx context.Context, rev int64) {
	for {
		v.mu.Lock()
		at, changed := v.rev, v.changed
		v.mu.Unlock()
		if at >= rev {
			return
		}
		select {
		case <-changed:
		case <-ctx.Done():
			return
		}
	}
}

func (v *view[T]) run(ctx context.Context, cli *clientv3.Client, prefix string, parse func([]byte) (T, bool), ready chan<- struct{}) {
	empty := map[string]T{}
	v.m.Store(&empty)
	v.mu.Lock()
	v.changed = make(chan struct{})
	v.mu.Unlock()
	etcdwatch.Prefix(ctx, cli, prefix, func(kvs []etcdwatch.KV, reset bool, rev int64) {
		next := map[string]T{}
		if !reset {
			for k, x := range *v.m.Load() {
				next[k] = x
			}
		}
		for _, e := range kvs {
			key := strings.TrimPrefix(e.Key, prefix)
			if strings.Count(key, "/") != 1 {
				continue // not owner/name: a key of an older layout
			}
			if e.Value == nil {
				delete(next, key)
				continue
			}
			if x, ok := parse(e.Value); ok {
				next[key] = x
			}
		}
		v.m.Store(&next)
		v.mu.Lock()
		if rev > v.rev {
			v.rev = rev
			close(v.changed)
			v.changed = make(chan struct{})
		}
		v.mu.Unlock()
	}, ready)
}
