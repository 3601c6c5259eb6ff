package files

import (
	"context"
	"errors"
	"sync"
	"time"

	clientv3 "go.etcd.io/etcd/client/v3"
	"go.etcd.io/etcd/client/v3/concurrency"

	v1 "github.com/hivemind/taskworker/api/taskworker/v1"
	"github.com/hivemind/taskworker/internal/erasure"
	"github.com/hivemind/taskworker/internal/placement"
)

// Run runs the repairer and the collector while this pool holds the
// storage leadership (an etcd election; one pool at a time), until ctx
// ends. name identifies the pool in the election.
func (s *Service) Run(ctx context.Context, name string) {
	for ctx.Err() == nil {
		sess, err := concurrency.NewSession(s.cli, concurrency.WithTTL(5), concurrency.WithContext(ctx))
		if err != nil {
			sleep(ctx, time.Second)
			continue
		}
		el := concurrency.NewElection(sess, s.keys.prefix+"leader/files")
		if err := el.Campaign(ctx, name); err != nil {
			sess.Close()
			sleep(ctx, time.Second)
			continue
		}
		s.log.Info("leading storage repair and collection")
		lctx, cancel := context.WithCancel(ctx)
		go func() {
			select {
			case <-sess.Done(): // lost the session: another pool may lead now
				cancel()
			case <-lctx.Done():
			}
		}()
		s.lead(lctx)
		cancel()
		rctx, rcancel := context.WithTimeout(context.Background(), 2*time.Second)
		_ = el.Resign(rctx)
		rcancel()
		sess.Close()
	}
}

func sleep(ctx context.Context, d time.Duration) {
	t := time.NewTimer(d)
	defer t.Stop()
	select {
	case <-ctx.Done():
	case <-t.C:
	}
}

// lead repairs and collects until ctx ends. A worker missing for longer
// than RepairGrace is lost: its shards are rebuilt elsewhere. The state is
// all in etcd (manifests, damage reports), so a new leader resumes where the
// old one stopped; only the grace clock restarts.
func (s *Service) lead(ctx context.Context) {
	missingSince := map[string]time.Time{}
	// A lost worker's repair starts at the first check after the registry
	// saw its lease expire; a check only reads the registry's live set, in
	// memory, so it is cheap to make often.
	check := time.NewTicker(50 * time.Millisecond)
	defer check.Stop()
	repairTick := time.NewTicker(s.cfg.RepairInterval)
	defer repairTick.Stop()
	inventoryTick := time.NewTicker(s.cfg.InventoryInterval)
	defer inventoryTick.Stop()
	suspects := map[writeRef]time.Time{} // failed writes found once (see collect)
	pass := func() {
		if err := s.repairPass(ctx, missingSince); err != nil && ctx.Err() == nil {
			s.log.Warn("repair pass", "err", err)
		}
	}
	pass()
	known := s.liveSet()
	triggered := map[string]bool{} // workers whose grace ran out and got a pass
	for {
		select {
		case <-ctx.Done():
			return
		case <-s.kick:
			pass()
		case <-repairTick.C:
			pass()
		case <-inventoryTick.C:
			if err := s.reconcile(ctx, suspects); err != nil && ctx.Err() == nil {
				s.log.Warn("comparing inventories with manifests", "err", err)
			}
		case <-check.C:
			// Start the grace clock of workers that just left, and repair
			// as soon as one's grace is over rather than at the next tick.
			live := s.liveSet()
			now := time.Now()
			for id := range known {
				if _, noted := missingSince[id]; !live[id] && !noted {
					missingSince[id] = now
				}
			}
			for id := range live {
				known[id] = true
			}
			due := false
			for id, since := range missingSince {
				if live[id] {
					delete(missingSince, id)
					delete(triggered, id)
				} else if now.Sub(since) >= s.cfg.RepairGrace && !triggered[id] {
					triggered[id] = true
					due = true
				}
			}
			if due {
				pass()
			}
		}
	}
}

// repairPass finds every file version with shards to rebuild and repairs
// them, RepairConcurrency at a time.
func (s *Service) repairPass(ctx context.Context, missingSince map[string]time.Time) error {
	live := s.liveSet()
	damaged, err := s.damage(ctx, "")
	if err != nil {
		return err
	}
	now := time.Now()
	gone := map[string]bool{}
	isGone := func(id string) bool {
		if id == "" {
			return true
		}
		if live[id] {
			return false
		}
		if g, ok := gone[id]; ok {
			return g
		}
		since, ok := missingSince[id]
		if !ok {
			since = now
			missingSince[id] = now
		}
		gone[id] = now.Sub(since) >= s.cfg.RepairGrace
		return gone[id]
	}
	var jobs []string
	err = s.eachShardedManifest(ctx, true, func(key string, _ int64, m *manifest) error {
		for b := range m.Placement {
			for i := range m.Placement[b] {
				h := m.holder(int64(b), i)
				if isGone(h) || live[h] && damaged.has(s.keys, m, int64(b), i) {
					jobs = append(jobs, key)
					return nil
				}
			}
		}
		return nil
	})
	if err != nil {
		return err
	}
	s.stats.pending.Store(int64(len(jobs)))
	if len(jobs) == 0 {
		return nil
	}
	s.log.Info("repairing", "file_versions", len(jobs))
	start, rebuiltBefore := time.Now(), s.stats.rebuilt.Load()
	defer func() {
		s.log.Info("repair pass done", "file_versions", len(jobs), "shards_rebuilt", s.stats.rebuilt.Load()-rebuiltBefore, "took", time.Since(start))
	}()
	work := make(chan string)
	var wg sync.WaitGroup
	for range s.cfg.RepairConcurrency {
		wg.Go(func() {
			for key := range work {
				if err := s.repairFile(ctx, key, gone, damaged); err != nil {
					s.stats.failed.Add(1)
					s.log.Warn("repair failed", "manifest", key, "err", err)
				} else {
					s.stats.done.Add(1)
				}
				s.stats.pending.Add(-1)
			}
		})
	}
	for _, key := range jobs {
		select {
		case work <- key:
		case <-ctx.Done():
		}
	}
	close(work)
	wg.Wait()
	return ctx.Err()
}

// repairBlocksInFlight bounds the blocks of one file being read and
// decoded at once: each holds its k shards and the rebuilt ones, some
// 10 MiB of 8 MiB blocks in 4+2. repairPutsInFlight bounds the rebuilt
// blocks of one file being stored (sent to a worker that fsyncs them)
// at once: each holds only its rebuilt shards, 2 MiB there. A block
// gives up its read slot when decoded, so reads go on while workers
// write (RATIONALE.md, "Why is a file's repair a pipeline?").
const (
	repairBlocksInFlight = 8
	repairPutsInFlight   = 8
)

// repairBlock rebuilds the lost and damaged shards of block b on the
// workers placement chooses, and returns the shards it stored and how many
// it could place nowhere (too few workers). It holds a slot of reads from
// the moment it is called until the block is decoded, then one of puts.
func (s *Service) repairBlock(ctx context.Context, m *manifest, d *erasure.Decoder, b int64, current []string, gone map[string]bool, damaged damageSet, workers []placement.Worker, reads, puts chan struct{}) (_ []placement.Rebuild, short int, _ error) {
	release := func() {
		if reads != nil {
			<-reads
			reads = nil
		}
	}
	defer release()
	var damagedHere []int
	for i, h := range current {
		switch {
		case h == "" || gone[h]:
			current[i] = ""
		case damaged.has(s.keys, m, b, i):
			damagedHere = append(damagedHere, i)
		}
	}
	plan, err := placement.PlanRepair(s.placeable(workers, current), m.FileID, b, current, damagedHere)
	if err != nil {
		return nil, 0, err
	}
	short = len(plan.Unplaceable)
	if len(plan.Rebuild) == 0 {
		return nil, short, nil
	}
	lost := make([]int, len(plan.Rebuild))
	for j, r := range plan.Rebuild {
		lost[j] = r.Shard
	}
	data, err := d.Rebuild(ctx, b, lost)
	if err != nil {
		return nil, short, err
	}
	release()
	select {
	case puts <- struct{}{}:
		defer func() { <-puts }()
	case <-ctx.Done():
		return nil, short, ctx.Err()
	}
	var stored []placement.Rebuild
	for j, r := range plan.Rebuild {
		k := &v1.ShardKey{FileId: m.FileID, WriteId: m.WriteID, Block: b, Shard: int32(r.Shard)}
		if err := s.putShard(ctx, r.To, k, data[j]); err != nil {
			s.log.Warn("storing a rebuilt shard", "worker", r.To, "file", m.FileID, "block", b, "shard", r.Shard, "err", err)
			continue
		}
		stored = append(stored, r)
		s.stats.rebuilt.Add(1)
		s.stats.rebuiltBytes.Add(int64(len(data[j])))
	}
	return stored, short, nil
}

// repairWindow is how many blocks are repaired between manifest commits, so
// a large file's repair keeps its progress across a pool restart.
const repairWindow = 16

// repairWindows cuts blocks [from, blocks) of m into the windows committed
// one by one: repairWindow blocks, never spanning two segments.
func repairWindows(m *manifest, from int64) [][2]int64 {
	var out [][2]int64
	blocks := int64(len(m.Placement))
	for from < blocks {
		end := min(from+repairWindow, blocks)
		if m.segmented() {
			_, segEnd := m.segmentBlockRange(m.segmentOf(from))
			end = min(end, segEnd)
		}
		out = append(out, [2]int64{from, end})
		from = end
	}
	return out
}

// beforeRepairCommit, when set (by tests), is called before each window's
// compare-and-swap.
var beforeRepairCommit func(s *Service, key string)

// repairedBlock is the outcome of one block's rebuild.
type repairedBlock struct {
	b       int64
	rebuilt []placement.Rebuild
	short   int // shards it could place nowhere
	err     error
}

// repairFile rebuilds the lost and damaged shards of one file version,
// committing each window of blocks with compare-and-swap on the value that
// holds them: the manifest, or for a version in segments the segment (a
// window never spans two). Blocks are rebuilt as a pipeline across
// windows: a window is committed once all its blocks are stored, while
// the blocks after it are being rebuilt. A window that changed under it
// is read again and redone, with every block after it.
func (s *Service) repairFile(ctx context.Context, key string, gone map[string]bool, damaged damageSet) error {
	m, headRev, err := s.loadForRepair(ctx, key)
	if m == nil || err != nil {
		return err // nil, nil: deleted meanwhile
	}
	var from int64
	for attempt := 0; attempt < 5; attempt++ {
		next, err := s.repairFrom(ctx, key, m, &headRev, from, gone, damaged)
		if err != errConflict {
			return err
		}
		// Changed under us: read it again, redo from the window that
		// did not commit.
		from = next
		if m, headRev, err = s.loadForRepair(ctx, key); m == nil || err != nil {
			return err
		}
	}
	return errConflict
}

// repairFrom repairs blocks [from, end) of m, committing window by window
// into m and headRev (or m's segment revisions). On a failed
// compare-and-swap it returns errConflict and the first block of the
// window that did not commit.
func (s *Service) repairFrom(ctx context.Context, key string, m *manifest, headRev *int64, from int64, gone map[string]bool, damaged damageSet) (int64, error) {
	// The blocks are read from a copy of m, taken before any commit:
	// commits change m while later blocks are being rebuilt.
	src := m.clonePlacement()
	d, err := s.decoder(src)
	if err != nil {
		return from, err
	}
	windows := repairWindows(m, from)
	if len(windows) == 0 {
		return from, nil
	}
	workers := s.workers.StorageWorkers()
	ctx, cancel := context.WithCancel(ctx)
	var wg sync.WaitGroup
	defer func() {
		cancel()
		wg.Wait()
	}()
	reads := make(chan struct{}, repairBlocksInFlight)
	puts := make(chan struct{}, repairPutsInFlight)
	results := make(chan repairedBlock, repairBlocksInFlight+repairPutsInFlight)
	wg.Go(func() { // launches the blocks in order, as read slots free
		for _, w := range windows {
			for b := w[0]; b < w[1]; b++ {
				select {
				case reads <- struct{}{}:
				case <-ctx.Done():
					return
				}
				wg.Go(func() {
					rs, short, err := s.repairBlock(ctx, src, d, b, src.holders(b), gone, damaged, workers, reads, puts)
					select {
					case results <- repairedBlock{b: b, rebuilt: rs, short: short, err: err}:
					case <-ctx.Done():
					}
				})
			}
		}
	})
	// One line for the file rather than one per block: a network that lost
	// workers (or is stopping) would log every block of every file.
	var shortBlocks, shortShards int
	defer func() {
		if shortBlocks > 0 {
			s.log.Warn("not enough workers to restore full redundancy", "file", m.FileID, "blocks", shortBlocks, "shards", shortShards)
		}
	}()
	done := map[int64]repairedBlock{}
	for _, w := range windows {
		for b := w[0]; b < w[1]; {
			if _, ok := done[b]; ok {
				b++
				continue
			}
			select {
			case r := <-results:
				done[r.b] = r
			case <-ctx.Done():
				return w[0], ctx.Err()
			}
		}
		var (
			repaired []string // damage keys resolved
			errs     []error
		)
		for b := w[0]; b < w[1]; b++ {
			r := done[b]
			delete(done, b)
			errs = append(errs, r.err)
			if r.short > 0 {
				shortBlocks++
				shortShards += r.short
			}
			for _, rb := range r.rebuilt {
				m.setHolder(b, rb.Shard, rb.To)
				repaired = append(repaired, s.keys.damage(m.FileID, m.WriteID, b, rb.Shard))
			}
		}
		if err := errors.Join(errs...); err != nil && len(repaired) == 0 {
			return w[0], err
		}
		if len(repaired) == 0 {
			continue
		}
		seg := -1
		if m.segmented() {
			seg = m.segmentOf(w[0])
		}
		cmps := []clientv3.Cmp{clientv3.Compare(clientv3.ModRevision(key), "=", *headRev)}
		var put clientv3.Op
		if seg < 0 {
			put = clientv3.OpPut(key, m.marshal())
		} else {
			segKey := s.keys.segment(m.FileID, m.WriteID, seg)
			val, err := m.segment(seg)
			if err != nil {
				return w[0], err
			}
			cmps = append(cmps, clientv3.Compare(clientv3.ModRevision(segKey), "=", m.segRevs[seg]))
			put = clientv3.OpPut(segKey, val)
		}
		ops := []clientv3.Op{put}
		for _, k := range repaired {
			ops = append(ops, clientv3.OpDelete(k))
		}
		if beforeRepairCommit != nil {
			beforeRepairCommit(s, key)
		}
		txn, err := s.cli.Txn(ctx).If(cmps...).Then(ops...).Commit()
		if err != nil {
			return w[0], err
		}
		if !txn.Succeeded {
			return w[0], errConflict
		}
		if seg < 0 {
			*headRev = txn.Header.Revision
		} else {
			m.segRevs[seg] = txn.Header.Revision
		}
	}
	return int64(len(m.Placement)), nil
}

// loadForRepair reads the manifest under key, with its blocks, and its mod
// revision; nil if it is gone.
func (s *Service) loadForRepair(ctx context.Context, key string) (*manifest, int64, error) {
	resp, err := s.cli.Get(ctx, key)
	if err != nil || len(resp.Kvs) == 0 {
		return nil, 0, err
	}
	m, err := unmarshalManifest(resp.Kvs[0].Value)
	if err != nil {
		return nil, 0, err
	}
	if err := s.loadSegments(ctx, m, resp.Header.Revision); err != nil {
		return nil, 0, err
	}
	return m, resp.Kvs[0].ModRevision, nil
}
