package pool

import (
	"context"
	"errors"
	"time"

	"go.etcd.io/etcd/api/v3/v3rpc/rpctypes"
	clientv3 "go.etcd.io/etcd/client/v3"
)

// Defaults of the etcd upkeep (docs/RATIONALE.md, "Why compact and
// defragment etcd, and when?").
const (
	defaultCompactEvery  = 5 * time.Minute
	defaultCompactRetain = time.Hour
	defaultDefragEvery   = 10 * time.Minute
	defaultDefragMinFree = 64 << 20
)

// compactor compacts etcd's history on a schedule, keeping the revisions of
// the last retain: every pool samples the current revision every `every`,
// and compacts to the newest sample at least retain old. Several pools over
// one etcd do the same work; a compaction another did first is no error.
type compactor struct {
	cli           *clientv3.Client
	every, retain time.Duration
	log           interface{ Warn(string, ...any) }

	samples []revisionAt // oldest first
	done    int64        // the revision last compacted to
}

type revisionAt struct {
	at  time.Time
	rev int64
}

func (c *compactor) run(ctx context.Context) {
	t := time.NewTicker(c.every)
	defer t.Stop()
	for {
		c.step(ctx, time.Now())
		select {
		case <-ctx.Done():
			return
		case <-t.C:
		}
	}
}

// step samples the revision at now and compacts to the newest sample that
// is retain old.
func (c *compactor) step(ctx context.Context, now time.Time) {
	resp, err := c.cli.Get(ctx, "\x00", clientv3.WithCountOnly())
	if err != nil {
		return // etcd unreachable: the next tick tries again
	}
	c.samples = append(c.samples, revisionAt{now, resp.Header.Revision})
	target := int64(0)
	keep := 0
	for i, s := range c.samples {
		if now.Sub(s.at) < c.retain {
			break
		}
		target, keep = s.rev, i
	}
	c.samples = c.samples[keep:]
	if target <= c.done {
		return
	}
	cctx, cancel := context.WithTimeout(ctx, time.Minute)
	defer cancel()
	// Physical: the call returns once the space is free to reuse, so a
	// defragmentation after it gives it back.
	if _, err := c.cli.Compact(cctx, target, clientv3.WithCompactPhysical()); err != nil && !errors.Is(err, rpctypes.ErrCompacted) {
		c.log.Warn("compacting etcd", "revision", target, "err", err)
		return
	}
	c.done = target
}

// defragmenter gives the embedded etcd's free pages back to the file
// system. Defragmentation blocks the member's reads and writes while it
// runs (about a second per GiB), so it runs only when much is free.
type defragmenter struct {
	cli      *clientv3.Client
	defrag   func() error // the embedded etcd's
	endpoint string
	every    time.Duration
	minFree  int64
	log      interface {
		Info(string, ...any)
		Warn(string, ...any)
	}
}

func (d *defragmenter) run(ctx context.Context) {
	t := time.NewTicker(d.every)
	defer t.Stop()
	for {
		select {
		case <-ctx.Done():
			return
		case <-t.C:
		}
		d.step(ctx)
	}
}

func (d *defragmenter) step(ctx context.Context) {
	st, err := d.cli.Status(ctx, d.endpoint)
	if err != nil {
		return
	}
	free := st.DbSize - st.DbSizeInUse
	if free < d.minFree || free < st.DbSize/2 {
		return
	}
	if err := d.defrag(); err != nil {
		d.log.Warn("defragmenting etcd", "endpoint", d.endpoint, "err", err)
		return
	}
	d.log.Info("defragmented etcd", "endpoint", d.endpoint, "size_before", st.DbSize, "in_use", st.DbSizeInUse)
}

// startUpkeep starts compaction, and defragmentation of an embedded etcd,
// as configured.
func (s *Server) startUpkeep(ctx context.Context) {
	every, retain := s.cfg.EtcdCompactEvery, s.cfg.EtcdCompactRetain
	if every == 0 {
		every = defaultCompactEvery
	}
	if retain == 0 {
		retain = defaultCompactRetain
	}
	if every > 0 {
		c := &compactor{cli: s.cli, every: every, retain: retain, log: s.log}
		s.goRun(func() { c.run(ctx) })
	}
	defrag := s.cfg.EtcdDefragEvery
	if defrag == 0 {
		defrag = defaultDefragEvery
	}
	minFree := s.cfg.EtcdDefragMinFree
	if minFree == 0 {
		minFree = defaultDefragMinFree
	}
	if s.etcd != nil && defrag > 0 {
		d := &defragmenter{cli: s.cli, defrag: s.etcd.Defragment, endpoint: s.etcd.Endpoints()[0], every: defrag, minFree: minFree, log: s.log}
		s.goRun(func() { d.run(ctx) })
	}
}
