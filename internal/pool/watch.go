package pool

import (
	"context"
	"time"

	clientv3 "go.etcd.io/etcd/client/v3"
)

// kv is one key's new value; a nil value means the key was deleted.
type kv struct {
	key   string
	value []byte
}

// watchPrefix calls apply with every key under prefix, then with every
// change, each time with the etcd revision the caller's view is then at,
// until ctx ends. After a watch failure (etcd down, history
// compacted) it lists the prefix again and calls apply with reset set, so the
// caller's view is rebuilt rather than patched. ready is closed after the
// first successful list.
func watchPrefix(ctx context.Context, cli *clientv3.Client, prefix string, apply func(kvs []kv, reset bool, rev int64), ready chan<- struct{}) {
	backoff := 100 * time.Millisecond
	for ctx.Err() == nil {
		resp, err := cli.Get(ctx, prefix, clientv3.WithPrefix())
		if err != nil {
			sleepCtx(ctx, backoff)
			backoff = min(2*backoff, 2*time.Second)
			continue
		}
		backoff = 100 * time.Millisecond
		kvs := make([]kv, len(resp.Kvs))
		for i, e := range resp.Kvs {
			kvs[i] = kv{key: string(e.Key), value: e.Value}
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
				e := kv{key: string(ev.Kv.Key)}
				if ev.Type == clientv3.EventTypePut {
					e.value = ev.Kv.Value
				}
				kvs = append(kvs, e)
			}
			apply(kvs, false, wresp.Header.Revision)
		}
		cancel()
		sleepCtx(ctx, backoff)
	}
}

func sleepCtx(ctx context.Context, d time.Duration) {
	t := time.NewTimer(d)
	defer t.Stop()
	select {
	case <-ctx.Done():
	case <-t.C:
	}
}
