package tasks

import (
	"context"
	"errors"
	"sync"
	"time"

	"go.etcd.io/etcd/api/v3/v3rpc/rpctypes"
	clientv3 "go.etcd.io/etcd/client/v3"
	"google.golang.org/protobuf/proto"

	v1 "github.com/hivemind/taskworker/api/taskworker/v1"
)

// waiters serves every Wait of a store from one etcd watch of all task
// records, rather than a watch per Wait: a watch opened at an old revision
// is served by etcd's slower catch-up loop, and a watch per waiting client
// costs etcd more than a lookup in a map costs here.
type waiters struct {
	cli    *clientv3.Client
	prefix string

	mu      sync.Mutex
	started bool
	ready   chan struct{} // closed once the watch is established
	byKey   map[string]map[*waiter]struct{}
}

// waiter receives a record's new values (nil: read it again).
type waiter struct {
	key string
	ch  chan []byte
}

func newWaiters(cli *clientv3.Client, prefix string) *waiters {
	return &waiters{cli: cli, prefix: prefix, ready: make(chan struct{}), byKey: map[string]map[*waiter]struct{}{}}
}

// add registers a waiter for key. Once the returned channel is closed,
// the watch covers every change after the caller's next read of key.
func (ws *waiters) add(key string) (*waiter, <-chan struct{}) {
	w := &waiter{key: key, ch: make(chan []byte, 1)}
	ws.mu.Lock()
	defer ws.mu.Unlock()
	if ws.byKey[key] == nil {
		ws.byKey[key] = map[*waiter]struct{}{}
	}
	ws.byKey[key][w] = struct{}{}
	if !ws.started {
		ws.started = true
		go ws.watch()
	}
	return w, ws.ready
}

func (ws *waiters) remove(w *waiter) {
	ws.mu.Lock()
	defer ws.mu.Unlock()
	delete(ws.byKey[w.key], w)
	if len(ws.byKey[w.key]) == 0 {
		delete(ws.byKey, w.key)
	}
}

// notify hands key's new value (nil: read it again) to its waiters.
func (ws *waiters) notify(key string, val []byte) {
	ws.mu.Lock()
	defer ws.mu.Unlock()
	for w := range ws.byKey[key] {
		w.notify(val)
	}
}

// notify hands val to w, replacing a value w has not taken yet.
func (w *waiter) notify(val []byte) {
	select {
	case <-w.ch:
	default:
	}
	w.ch <- val
}

// watch follows the records until the client closes. A broken watch is
// resumed from the last revision seen, so no change is missed; only when
// etcd has compacted that history are all waiters told to read again.
func (ws *waiters) watch() {
	ctx := ws.cli.Ctx()
	var last int64
	reset := false // history was lost: waiters read again once watching
	for ctx.Err() == nil {
		opts := []clientv3.OpOption{clientv3.WithPrefix(), clientv3.WithCreatedNotify()}
		if last > 0 {
			opts = append(opts, clientv3.WithRev(last+1))
		}
		wctx, cancel := context.WithCancel(clientv3.WithRequireLeader(ctx))
		for resp := range ws.cli.Watch(wctx, ws.prefix, opts...) {
			if err := resp.Err(); err != nil {
				if errors.Is(err, rpctypes.ErrCompacted) {
					last, reset = 0, true
				}
				break
			}
			if resp.Created {
				if last == 0 {
					last = resp.Header.Revision
				}
				ws.mu.Lock()
				select {
				case <-ws.ready:
				default:
					close(ws.ready)
				}
				ws.mu.Unlock()
				if reset {
					reset = false
					ws.all(nil)
				}
			}
			for _, ev := range resp.Events {
				var val []byte
				if ev.Type == clientv3.EventTypePut {
					val = ev.Kv.Value
				}
				ws.notify(string(ev.Kv.Key), val)
				last = ev.Kv.ModRevision
			}
		}
		cancel()
		sleep(ctx, 50*time.Millisecond)
	}
}

// all tells every waiter to read its record again.
func (ws *waiters) all(val []byte) {
	ws.mu.Lock()
	defer ws.mu.Unlock()
	for _, set := range ws.byKey {
		for w := range set {
			w.notify(val)
		}
	}
}

// Wait returns owner's task id once it has ended, or ctx's error.
func (s *Store) Wait(ctx context.Context, owner, id string) (*v1.Task, error) {
	if err := CheckID(id); err != nil {
		return nil, err
	}
	w, ready := s.waits.add(s.k.record(owner, id))
	defer s.waits.remove(w)
	select {
	case <-ready:
	default:
		// The watch is not there yet (the first Wait, or etcd is out of
		// reach): a read says which, and answers what it can.
		t, _, err := s.Get(ctx, owner, id)
		if err != nil || Ended(t.State) {
			return t, err
		}
		select {
		case <-ready:
		case <-ctx.Done():
			return t, ctx.Err()
		}
	}
	// A task this replica is running has not ended: its end is told to w
	// by the runner, or by the watch if it runs again elsewhere.
	r := s.runner.Load()
	read := r == nil || !r.isUnrecorded(owner, id)
	var t *v1.Task
	var err error
	for {
		if read {
			t, _, err = s.Get(ctx, owner, id)
			if err != nil || Ended(t.State) {
				return t, err
			}
		}
		read = true
		for reread := false; !reread; {
			select {
			case <-ctx.Done():
				return t, ctx.Err()
			case val := <-w.ch:
				if val == nil {
					reread = true
					continue
				}
				next := &v1.Task{}
				if proto.Unmarshal(val, next) != nil {
					reread = true
					continue
				}
				if Ended(next.State) {
					return next, nil
				}
			}
		}
	}
}
