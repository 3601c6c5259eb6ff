// Package etcdwatch keeps a process's view of an etcd prefix: a full list,
// then every change, rebuilt from a fresh list when the watch fails.
//
// # Caveats
//
//   - Between a watch failure and the next list, the view is stale; callers
//     that must not act on a stale view read etcd instead.
package etcdwatch

import (
	"context"
	"time"

	clientv3 "go.etcd.io/etcd/client/v3"
)

// KV is one key's new value; a nil Value means the key was deleted.
type KV struct {
	Key   string
	Value []byte
}

// Prefix calls apply with every key under prefix, then with every change,
// each time with the etcd revision the caller's view is then at, until ctx
// ends. After a watch failure (etcd down, history compacted) it lists the
// prefix again and calls apply with reset set, so the caller's view is
// rebuilt rather than patched. ready, if not nil, is closed after the first
// successful list.
func Prefix(ctx context.Context, cli *clientv3.Client, prefix string, apply func(kvs []KV, reset bool, rev int64), ready chan<- struct{}) {
	backoff := 100 * time.Millisecond
	for ctx.Err() == nil {
		resp, err := cli.Get(ctx, prefix, clientv3.WithPrefix())
		if err != nil {
			Sleep(ctx, backoff)
			backoff = min(2*backoff, 2*time.Second)
			continue
		}
		backoff = 100 * time.Millisecond
		kvs := make([]KV, len(resp.Kvs))
		for i, e := range resp.Kvs {
			kvs[i] = KV{Key: string(e.Key), Value: e.Value}
		}
		apply(kvs, true, resp.Header.Revision)
		if ready != nil {
			close(ready)
			ready = nil
		}
		wctx, cancel := context.WithCancel(clientv3.WithRequireLeader(ctx))
		for wresp := range cli.Watch(wctx, prefix, clientv3.WithPrefix(), clientv3.WithRev(resp.Header.Revision+1)) {
			if wresp.Err() != nil {
				break
			}
			kvs := kvs[:0]
			for _, ev := range wresp.Events {
				e := KV{Key: string(ev.Kv.Key)}
				if ev.Type == clientv3.EventTypePut {
					e.Value = ev.Kv.Value
				}
				kvs = append(kvs, e)
			}
			apply(kvs, false, wresp.Header.Revision)
		}
		cancel()
		Sleep(ctx, backoff)
	}
}

// Sleep waits for d or until ctx ends.
func Sleep(ctx context.Context, d time.Duration) {
	t := time.NewTimer(d)
	defer t.Stop()
	select {
	case <-ctx.Done():
	case <-t.C:
	}
}
