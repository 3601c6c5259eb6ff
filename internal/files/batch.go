package files

import (
	"bytes"
	"context"
	"errors"
	"sync"
	"time"

	"go.etcd.io/etcd/api/v3/v3rpc/rpctypes"
	clientv3 "go.etcd.io/etcd/client/v3"
	"google.golang.org/grpc/codes"
	"google.golang.org/grpc/status"
)

// Commits of concurrent writes share etcd transactions: a commit that
// arrives while batchesInFlight transactions are on their way waits for
// one of them to come back, and then goes with every other commit that
// waited, each as a nested transaction of one etcd transaction. Each keeps
// its own comparisons and its own all-or-nothing effect (etcd evaluates a
// nested transaction's comparisons and applies its operations or none of
// them); the batch only saves the round trips, the raft entries and the
// per-request work of etcd, which bound the small writes a pool commits
// (RATIONALE.md, "Why are commits batched?").
//
// etcd evaluates every comparison of a transaction, nested ones included,
// against the state before any of its operations, and refuses a
// transaction that writes a key twice. So commits go together only when
// none writes a key another compares or writes: then the batch has the
// effect of running them one after the other, in any order. Marks (keys
// written blind with an empty value, which say only that something
// changed: usage/changed/<user>) are the exception: commits that write the
// same mark share one write of it, outside their nested transactions.
// A mark written by a batch whose commits all failed their comparisons says
// something changed when nothing did; its readers then only count again.

const (
	// batchesInFlight bounds the batches on their way to etcd at once: a
	// lone commit never waits, and under load every commit that arrives
	// during a batch's round trip goes in the next. One rather than two:
	// etcd syncs its log once for each batch that reaches it alone, and
	// two in flight mostly reach it one after the other, each with half
	// the commits (RATIONALE.md, "Why are commits batched?").
	batchesInFlight = 1
	// batchMaxCommits bounds the commits of a batch, under etcd's default
	// of 128 operations in one transaction.
	batchMaxCommits = 64
	// batchMaxBytes bounds a batch's keys and values, under etcd's 1.5 MiB
	// request limit; a larger commit (a manifest of many blocks) goes alone.
	batchMaxBytes = 1 << 20
	// batchTimeout bounds a batch's transaction: the commits in it have
	// callers of their own, whose deadlines may be shorter (they give up
	// waiting, with an ambiguous outcome) but not longer.
	batchTimeout = time.Minute
)

// commitTxn is one commit's transaction: if every comparison holds, the
// operations and the marks; else nothing.
type commitTxn struct {
	cmps  []clientv3.Cmp
	ops   []clientv3.Op
	marks []string
}

// pendingCommit is a commit in the committer's queue.
type pendingCommit struct {
	txn   commitTxn
	size  int
	taken bool          // sent, or about to be: its caller must wait for the outcome
	done  chan struct{} // closed once ok and err are set
	ok    bool
	err   error // the transaction's failure: it may have been applied
}

// committer batches the commit transactions of concurrent writes.
type committer struct {
	cli *clientv3.Client

	mu       sync.Mutex
	queue    []*pendingCommit
	inflight int

	// batches and batched count transactions sent and the commits they
	// carried, for tests and benchmarks.
	batches, batched int64
}

// do runs t, with other commits if some are waiting, and reports whether
// its comparisons held. An error means the outcome is unknown (t may have
// been applied), unless ctx ended before t was sent (then the error is the
// context's, and t was not applied).
func (c *committer) do(ctx context.Context, t commitTxn) (bool, error) {
	p := &pendingCommit{txn: t, size: t.size(), done: make(chan struct{})}
	c.mu.Lock()
	c.queue = append(c.queue, p)
	lead := c.inflight < batchesInFlight
	if lead {
		c.inflight++
	}
	c.mu.Unlock()
	if lead {
		c.send()
	}
	select {
	case <-p.done:
		return p.ok, p.err
	case <-ctx.Done():
	}
	c.mu.Lock()
	if !p.taken {
		c.queue = removeCommit(c.queue, p)
		c.mu.Unlock()
		return false, &notSentError{context.Cause(ctx)}
	}
	c.mu.Unlock()
	return false, context.Cause(ctx)
}

// notSentError is the failure of a commit whose caller gave up before it
// was sent: it was not applied.
type notSentError struct{ err error }

func (e *notSentError) Error() string { return e.err.Error() }
func (e *notSentError) Unwrap() error { return e.err }

func removeCommit(q []*pendingCommit, p *pendingCommit) []*pendingCommit {
	for i, x := range q {
		if x == p {
			return append(q[:i], q[i+1:]...)
		}
	}
	return q
}

// send sends one batch of the queue, and then, while commits wait, the
// next ones from a goroutine of their own, so that the caller that sent
// this one returns with its outcome.
func (c *committer) send() {
	c.mu.Lock()
	batch := c.take()
	if len(batch) == 0 {
		c.inflight--
		c.mu.Unlock()
		return
	}
	c.batches++
	c.batched += int64(len(batch))
	c.mu.Unlock()
	c.run(batch)
	c.mu.Lock()
	more := len(c.queue) > 0
	if !more {
		c.inflight--
	}
	c.mu.Unlock()
	if more {
		go c.send()
	}
}

// take removes from the queue the commits of the next batch: the oldest,
// and after it each that conflicts with none taken, within the bounds.
// The caller holds c.mu.
func (c *committer) take() []*pendingCommit {
	var (
		batch []*pendingCommit
		rest  = c.queue[:0]
		keys  batchKeys
		size  int
	)
	for _, p := range c.queue {
		fits := len(batch) == 0 ||
			len(batch) < batchMaxCommits && size+p.size <= batchMaxBytes && !keys.conflicts(p.txn)
		if !fits {
			rest = append(rest, p)
			continue
		}
		keys.add(p.txn)
		size += p.size
		p.taken = true
		batch = append(batch, p)
	}
	clear(c.queue[len(rest):])
	c.queue = rest
	return batch
}

// run sends a batch and hands each commit its outcome.
func (c *committer) run(batch []*pendingCommit) {
	ctx, cancel := context.WithTimeout(context.Background(), batchTimeout)
	defer cancel()
	if len(batch) == 1 {
		p := batch[0]
		p.ok, p.err = c.txn(ctx, p.txn)
		close(p.done)
		return
	}
	var (
		marks []clientv3.Op
		seen  = map[string]bool{}
		ops   = make([]clientv3.Op, 0, len(batch)+1)
	)
	for _, p := range batch {
		for _, m := range p.txn.marks {
			if !seen[m] {
				seen[m] = true
				marks = append(marks, clientv3.OpPut(m, ""))
			}
		}
	}
	ops = append(ops, marks...)
	for _, p := range batch {
		ops = append(ops, clientv3.OpTxn(p.txn.cmps, p.txn.ops, nil))
	}
	resp, err := c.cli.Txn(ctx).Then(ops...).Commit()
	if err != nil && refusedWhole(err) {
		// etcd refused the batch before applying any of it (a limit of
		// its configuration lower than the defaults): one at a time.
		for _, p := range batch {
			p.ok, p.err = c.txn(ctx, p.txn)
			close(p.done)
		}
		return
	}
	for i, p := range batch {
		if err != nil {
			p.err = err
		} else {
			p.ok = resp.Responses[len(marks)+i].GetResponseTxn().GetSucceeded()
		}
		close(p.done)
	}
}

// txn runs one commit as a transaction of its own.
func (c *committer) txn(ctx context.Context, t commitTxn) (bool, error) {
	ops := t.ops
	for _, m := range t.marks {
		ops = append(ops, clientv3.OpPut(m, ""))
	}
	resp, err := c.cli.Txn(ctx).If(t.cmps...).Then(ops...).Commit()
	if err != nil {
		return false, err
	}
	return resp.Succeeded, nil
}

// refusedWhole reports an etcd error that refuses a request before it is
// proposed: nothing of it was applied.
func refusedWhole(err error) bool {
	for _, e := range []error{rpctypes.ErrTooManyOps, rpctypes.ErrRequestTooLarge, rpctypes.ErrDuplicateKey} {
		if errors.Is(err, e) {
			return true
		}
	}
	switch status.Code(err) {
	case codes.InvalidArgument:
		return true
	}
	return false
}

// size is what t adds to a request: its keys and values.
func (t commitTxn) size() int {
	n := 0
	for _, c := range t.cmps {
		n += len(c.Key) + len(c.RangeEnd) + 16
	}
	for _, op := range t.ops {
		n += len(op.KeyBytes()) + len(op.RangeBytes()) + len(op.ValueBytes()) + 16
	}
	for _, m := range t.marks {
		n += len(m) + 16
	}
	return n
}

// keyRange is [from, to) in etcd's key order; to is empty for a single key.
type keyRange struct{ from, to []byte }

// beforeEnd reports whether key k sorts before r's end: for a single key,
// whether k <= r.from (the key just after r.from is r.from + "\x00").
func (r keyRange) beforeEnd(k []byte) bool {
	if len(r.to) > 0 {
		return bytes.Compare(k, r.to) < 0
	}
	return bytes.Compare(k, r.from) <= 0
}

func (r keyRange) overlaps(o keyRange) bool { return o.beforeEnd(r.from) && r.beforeEnd(o.from) }

// keySet is a set of keys and key ranges: single keys in a map, so that
// the common check (single keys against single keys) costs a lookup, not
// a pass over every key of the batch.
type keySet struct {
	keys   map[string]struct{}
	ranges []keyRange
}

func (s *keySet) add(r keyRange) {
	if len(r.to) > 0 {
		s.ranges = append(s.ranges, r)
		return
	}
	if s.keys == nil {
		s.keys = map[string]struct{}{}
	}
	s.keys[string(r.from)] = struct{}{}
}

func (s *keySet) overlaps(r keyRange) bool {
	for _, o := range s.ranges {
		if o.overlaps(r) {
			return true
		}
	}
	if len(r.to) == 0 {
		_, ok := s.keys[string(r.from)]
		return ok
	}
	for k := range s.keys {
		if r.overlaps(keyRange{from: []byte(k)}) {
			return true
		}
	}
	return false
}

// batchKeys is what the commits of a batch compare, write and mark.
type batchKeys struct {
	compared, written, marked keySet
}

func cmpRange(c clientv3.Cmp) keyRange { return keyRange{c.Key, c.RangeEnd} }
func opRange(op clientv3.Op) keyRange  { return keyRange{op.KeyBytes(), op.RangeBytes()} }
func markRange(m string) keyRange      { return keyRange{from: []byte(m)} }

// conflicts reports whether t writes a key the batch compares, writes or
// marks, compares a key it writes or marks, or marks a key it compares or
// writes.
func (k *batchKeys) conflicts(t commitTxn) bool {
	for _, op := range t.ops {
		if r := opRange(op); k.compared.overlaps(r) || k.written.overlaps(r) || k.marked.overlaps(r) {
			return true
		}
	}
	for _, c := range t.cmps {
		if r := cmpRange(c); k.written.overlaps(r) || k.marked.overlaps(r) {
			return true
		}
	}
	for _, m := range t.marks {
		if r := markRange(m); k.compared.overlaps(r) || k.written.overlaps(r) {
			return true
		}
	}
	return false
}

func (k *batchKeys) add(t commitTxn) {
	for _, c := range t.cmps {
		k.compared.add(cmpRange(c))
	}
	for _, op := range t.ops {
		k.written.add(opRange(op))
	}
	for _, m := range t.marks {
		k.marked.add(markRange(m))
	}
}
