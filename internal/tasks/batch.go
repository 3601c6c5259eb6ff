package tasks

import (
	"context"
	"fmt"
	"sync"
	"time"

	clientv3 "go.etcd.io/etcd/client/v3"
)

// Limits of one batched transaction. etcd refuses a transaction with more
// than --max-txn-ops (128 by default) compares or operations, or a request
// larger than --max-request-bytes (1.5 MiB by default).
const (
	batchOps   = 128
	batchBytes = 512 << 10
	// batchInflight is how many batches may be in flight at once: more than
	// one lets etcd commit the next while it answers the last.
	batchInflight = 8
)

// cond is a write's condition: key's modification revision is rev, or key
// is absent when rev is 0.
type cond struct {
	key string
	rev int64
}

// write is one logical transaction: its ops apply only if all its conds
// hold. A batcher commits many writes in one etcd transaction.
type write struct {
	conds []cond
	ops   []clientv3.Op

	done chan struct{}
	rev  int64 // the revision the write was committed at, or read at when !ok
	ok   bool
	err  error
}

func newWrite(conds []cond, ops ...clientv3.Op) *write {
	return &write{conds: conds, ops: ops, done: make(chan struct{})}
}

func (w *write) size() int {
	n := 0
	for _, op := range w.ops {
		n += len(op.KeyBytes()) + len(op.ValueBytes())
	}
	for _, c := range w.conds {
		n += len(c.key)
	}
	return n
}

func (w *write) finish(rev int64, ok bool, err error) {
	w.rev, w.ok, w.err = rev, ok, err
	close(w.done)
}

// batcher commits writes in groups: the writes that arrive while batches
// are in flight wait, and go together in the next one. An idle store thus
// commits a write at once, and a busy one commits many per round trip
// (etcd's cost is per transaction much more than per key).
type batcher struct {
	cli *clientv3.Client

	mu       sync.Mutex
	pending  []*write
	inflight int
}

// do commits ws, each on its own conditions, and returns when all are
// decided or ctx ends (after which they may still be committed).
func (b *batcher) do(ctx context.Context, ws ...*write) error {
	b.mu.Lock()
	b.pending = append(b.pending, ws...)
	if b.inflight < batchInflight {
		b.inflight++
		go b.loop()
	}
	b.mu.Unlock()
	for _, w := range ws {
		select {
		case <-w.done:
		case <-ctx.Done():
			return ctx.Err()
		}
	}
	return nil
}

// loop commits batches until none is pending.
func (b *batcher) loop() {
	for {
		b.mu.Lock()
		batch := b.take()
		if len(batch) == 0 {
			b.inflight--
			b.mu.Unlock()
			return
		}
		b.mu.Unlock()
		b.commit(batch)
	}
}

// take removes from pending the writes of the next batch: in order, as
// many as the limits allow, leaving for a later batch a write that touches
// a key an earlier one in the batch writes (etcd refuses a transaction
// that writes a key twice).
func (b *batcher) take() []*write {
	var batch, rest []*write
	ops, conds, size := 0, 0, 0
	written := map[string]bool{}
	for i, w := range b.pending {
		n, c, s := len(w.ops), len(w.conds), w.size()
		if len(batch) > 0 && (ops+n > batchOps || conds+c > batchOps || size+s > batchBytes) {
			rest = append(rest, b.pending[i:]...)
			break
		}
		clash := false
		for _, op := range w.ops {
			if written[string(op.KeyBytes())] {
				clash = true
			}
		}
		if clash {
			rest = append(rest, w)
			continue
		}
		for _, op := range w.ops {
			written[string(op.KeyBytes())] = true
		}
		batch = append(batch, w)
		ops, conds, size = ops+n, conds+c, size+s
	}
	b.pending = rest
	return batch
}

// commit commits batch in one transaction. When a condition fails, the
// transaction's else branch reads every key the batch compares, so the
// writes whose conditions hold are committed again without the others.
func (b *batcher) commit(batch []*write) {
	for len(batch) > 0 {
		var cmps []clientv3.Cmp
		var ops, reads []clientv3.Op
		seen := map[string]bool{}
		for _, w := range batch {
			for _, c := range w.conds {
				if c.rev == 0 {
					cmps = append(cmps, clientv3.Compare(clientv3.CreateRevision(c.key), "=", 0))
				} else {
					cmps = append(cmps, clientv3.Compare(clientv3.ModRevision(c.key), "=", c.rev))
				}
				if !seen[c.key] {
					seen[c.key] = true
					reads = append(reads, clientv3.OpGet(c.key, clientv3.WithKeysOnly()))
				}
			}
			ops = append(ops, w.ops...)
		}
		ctx, cancel := context.WithTimeout(b.cli.Ctx(), 10*time.Second)
		txn := b.cli.Txn(ctx).If(cmps...).Then(ops...)
		if len(batch) > 1 {
			txn = txn.Else(reads...)
		}
		resp, err := txn.Commit()
		cancel()
		if err != nil {
			for _, w := range batch {
				w.finish(0, false, fmt.Errorf("writing tasks to etcd: %w", err))
			}
			return
		}
		rev := resp.Header.Revision
		if resp.Succeeded {
			for _, w := range batch {
				w.finish(rev, true, nil)
			}
			return
		}
		if len(batch) == 1 {
			batch[0].finish(rev, false, nil)
			return
		}
		now := map[string]int64{}
		for _, r := range resp.Responses {
			if kvs := r.GetResponseRange().GetKvs(); len(kvs) > 0 {
				now[string(kvs[0].Key)] = kvs[0].ModRevision
			}
		}
		var again []*write
		for _, w := range batch {
			holds := true
			for _, c := range w.conds {
				holds = holds && now[c.key] == c.rev
			}
			if holds {
				again = append(again, w)
			} else {
				w.finish(rev, false, nil)
			}
		}
		batch = again
	}
}
