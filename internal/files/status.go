package files

import (
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"strings"
	"sync"

	"go.etcd.io/etcd/api/v3/mvccpb"
	clientv3 "go.etcd.io/etcd/client/v3"

	v1 "github.com/hivemind/taskworker/api/taskworker/v1"
	"github.com/hivemind/taskworker/internal/erasure"
	"github.com/hivemind/taskworker/internal/serving"
)

// damageSet holds shards reported damaged: "file/write/block/shard" keys.
type damageSet map[string]bool

func (d damageSet) has(k keys, m *manifest, b int64, i int) bool {
	return d[k.damage(m.FileID, m.WriteID, b, i)]
}

// damage loads the damaged shards recorded under a prefix of damage/.
func (s *Service) damage(ctx context.Context, fileID string) (damageSet, error) {
	prefix := s.keys.allDamage()
	if fileID != "" {
		prefix += fileID + "/"
	}
	resp, err := s.cli.Get(ctx, prefix, clientv3.WithPrefix(), clientv3.WithKeysOnly())
	if err != nil {
		return nil, err
	}
	set := damageSet{}
	for _, kv := range resp.Kvs {
		set[string(kv.Key)] = true
	}
	return set, nil
}

// liveSet returns the ids of the live storage workers.
func (s *Service) liveSet() map[string]bool {
	live := map[string]bool{}
	for _, w := range s.workers.StorageWorkers() {
		live[w.ID] = true
	}
	return live
}

// redundancy rates a manifest from what is known to be there: FULL when
// every shard is on a live worker and not known damaged (missing from the
// worker's inventory, failed a read or a scrub), LOST when some block has
// fewer good shards than it needs, REDUCED in between; SINGLE_COPY instead
// of FULL for a layout with no parity.
func (s *Service) redundancy(m *manifest, live map[string]bool, damaged damageSet) v1.Redundancy {
	if m.inline() {
		return v1.Redundancy_REDUNDANCY_FULL // as redundant as etcd
	}
	l, err := erasure.ParseLayout(m.Layout)
	if err != nil || m.segmented() && len(m.segRevs) != m.Segments {
		return v1.Redundancy_REDUNDANCY_LOST // its blocks are not all known
	}
	worst := v1.Redundancy_REDUNDANCY_FULL
	for b := range m.Placement {
		good := 0
		for i := range m.Placement[b] {
			if id := m.holder(int64(b), i); id != "" && live[id] && !damaged.has(s.keys, m, int64(b), i) {
				good++
			}
		}
		switch {
		case good < l.Data:
			return v1.Redundancy_REDUNDANCY_LOST
		case good < l.Shards():
			worst = v1.Redundancy_REDUNDANCY_REDUCED
		}
	}
	if worst == v1.Redundancy_REDUNDANCY_FULL && l.Parity == 0 {
		return v1.Redundancy_REDUNDANCY_SINGLE_COPY
	}
	return worst
}

// withRedundancy describes a manifest with its current redundancy.
func (s *Service) withRedundancy(ctx context.Context, m *manifest) *v1.FileInfo {
	info := m.proto()
	damaged, err := s.damage(ctx, m.FileID)
	if err != nil {
		return info // unknown: left unspecified
	}
	info.Redundancy = s.redundancy(m, s.liveSet(), damaged)
	return info
}

// Status summarises every stored file version's redundancy and the repairs:
// files and versions counted apart, shards known damaged, and when the
// workers' inventories were last compared with the manifests.
func (s *Service) Status(ctx context.Context) (*v1.StatusResponse, error) {
	out := &v1.StatusResponse{
		RepairsPending: s.stats.pending.Load(),
		RepairsDone:    s.stats.done.Load(),
		RepairsFailed:  s.stats.failed.Load(),
		ShardsRebuilt:  s.stats.rebuilt.Load(),
		BytesRebuilt:   s.stats.rebuiltBytes.Load(),
	}
	damaged, err := s.damage(ctx, "")
	if err != nil {
		return nil, serving.EtcdError(err)
	}
	out.ShardsDamaged = int64(len(damaged))
	if out.InventoryCheckedMs, err = s.inventoryChecked(ctx); err != nil {
		return nil, serving.EtcdError(err)
	}
	live := s.liveSet()
	files := map[string]bool{}
	// An inline file's record says all Status needs of it.
	err = s.scanManifests(ctx, true, inlineRecord, func(_ string, _ int64, m *manifest) error {
		out.BytesStored += m.Size
		files[m.FileID] = true
		switch s.redundancy(m, live, damaged) {
		case v1.Redundancy_REDUNDANCY_FULL:
			out.FilesFull++
		case v1.Redundancy_REDUNDANCY_SINGLE_COPY:
			out.FilesSingleCopy++
		case v1.Redundancy_REDUNDANCY_REDUCED:
			out.FilesReduced++
		default:
			out.FilesLost++
		}
		return nil
	})
	if err != nil {
		return nil, serving.EtcdError(err)
	}
	out.Files = int64(len(files))
	return out, nil
}

// eachManifest calls f with every manifest in etcd, a page at a time, with
// its key and mod revision; with blocks, with the blocks of those in
// segments too (else only their heads, which name the file and the write).
func (s *Service) eachManifest(ctx context.Context, blocks bool, f func(key string, modRev int64, m *manifest) error) error {
	return s.scanManifests(ctx, blocks, inlineWhole, f)
}

// eachShardedManifest is eachManifest for the versions whose bytes are
// shards on workers, which is all that repair, inventories and the
// collector look at: a file kept inline (every small one) is passed over
// without being decoded, so that a scan costs what the sharded versions
// cost, however many small files there are (RATIONALE.md, "Why do scans
// pass over inline files?").
func (s *Service) eachShardedManifest(ctx context.Context, blocks bool, f func(key string, modRev int64, m *manifest) error) error {
	return s.scanManifests(ctx, blocks, inlineSkipped, f)
}

// inlineScan is what a scan of manifests does with those of inline files.
type inlineScan int

const (
	inlineWhole   inlineScan = iota // decoded whole
	inlineRecord                    // only their fileRecord decoded (no bytes, no key)
	inlineSkipped                   // passed over
)

func (s *Service) scanManifests(ctx context.Context, blocks bool, inline inlineScan, f func(key string, modRev int64, m *manifest) error) error {
	if inline != inlineWhole {
		return s.scanKnownInline(ctx, blocks, inline, f)
	}
	prefix := s.keys.allManifests()
	end := clientv3.GetPrefixRangeEnd(prefix)
	from := prefix
	for {
		resp, err := s.cli.Get(ctx, from, clientv3.WithRange(end), clientv3.WithLimit(64))
		if err != nil {
			return err
		}
		for _, kv := range resp.Kvs {
			if err := s.scanOne(ctx, blocks, inline, kv, resp.Header.Revision, f); err != nil {
				return err
			}
		}
		if !resp.More || len(resp.Kvs) == 0 {
			return nil
		}
		from = string(resp.Kvs[len(resp.Kvs)-1].Key) + "\x00"
	}
}

// scanOne decodes one manifest of a scan as inline says and calls f with
// it; rev is the etcd revision it was read at.
func (s *Service) scanOne(ctx context.Context, blocks bool, inline inlineScan, kv *mvccpb.KeyValue, rev int64, f func(key string, modRev int64, m *manifest) error) error {
	var m *manifest
	var err error
	switch {
	case inline == inlineWhole || !inlineManifest(kv.Value):
		m, err = unmarshalManifest(kv.Value)
	case inline == inlineSkipped:
		s.inlines.note(string(kv.Key), kv.ModRevision, -1)
		return nil
	default:
		m = &manifest{}
		if err = json.Unmarshal(kv.Value, &m.fileRecord); err == nil {
			s.inlines.note(string(kv.Key), kv.ModRevision, m.Size)
		}
	}
	if err == nil && blocks {
		if err := s.loadSegments(ctx, m, rev); errors.Is(err, errSegments) {
			// Passed on without blocks: lost (see redundancy).
			s.log.Warn("unreadable segments", "key", string(kv.Key), "err", err)
		} else if err != nil {
			return err
		}
	}
	if err != nil {
		s.log.Warn("unreadable manifest", "key", string(kv.Key), "err", err)
		return nil
	}
	return f(string(kv.Key), kv.ModRevision, m)
}

// scanKeysPage is how many manifest keys a scan lists at once (keys and
// revisions only, some 100 bytes each: 1 MB): few requests, as each
// linearizable read waits for etcd's disk when it is busy; valuesPerTxn
// how many values it reads in one transaction (etcd allows 128 operations
// in one).
const (
	scanKeysPage = 10_000
	valuesPerTxn = 64
)

// scanKnownInline is scanManifests for a scan that passes over inline
// files or needs only their record: it lists the keys with their mod
// revisions, and reads only the values it has not seen inline at that mod
// revision (a mod revision changes with every write of the key, so the
// value is the one seen). After the small files of a busy day a scan
// reads the sharded versions and the new files, not every file's bytes
// (RATIONALE.md, "Why do scans remember the inline manifests?").
func (s *Service) scanKnownInline(ctx context.Context, blocks bool, inline inlineScan, f func(key string, modRev int64, m *manifest) error) error {
	prefix := s.keys.allManifests()
	end := clientv3.GetPrefixRangeEnd(prefix)
	from := prefix
	gen := s.inlines.begin()
	for {
		resp, err := s.cli.Get(ctx, from, clientv3.WithRange(end), clientv3.WithKeysOnly(), clientv3.WithLimit(scanKeysPage))
		if err != nil {
			return err
		}
		sizes, need := s.inlines.lookup(resp.Kvs, inline == inlineRecord, gen)
		vals := map[string]*mvccpb.KeyValue{}
		revs := map[string]int64{}
		for len(need) > 0 {
			batch := need[:min(len(need), valuesPerTxn)]
			need = need[len(batch):]
			ops := make([]clientv3.Op, len(batch))
			for i, k := range batch {
				ops[i] = clientv3.OpGet(k)
			}
			txn, err := s.cli.Txn(ctx).Then(ops...).Commit()
			if err != nil {
				return err
			}
			for _, r := range txn.Responses {
				for _, kv := range r.GetResponseRange().GetKvs() {
					vals[string(kv.Key)] = kv
					revs[string(kv.Key)] = txn.Header.Revision
				}
			}
		}
		for i, kv := range resp.Kvs {
			key := string(kv.Key)
			if sizes[i] != needValue {
				if inline == inlineRecord {
					id := strings.TrimPrefix(key, prefix)
					id = id[:max(0, strings.LastIndexByte(id, '/'))]
					m := &manifest{fileRecord: fileRecord{FileID: id, Size: sizes[i], Layout: inlineLayout}}
					if err := f(key, kv.ModRevision, m); err != nil {
						return err
					}
				}
				continue
			}
			v := vals[key]
			if v == nil {
				continue // deleted since listed
			}
			if err := s.scanOne(ctx, blocks, inline, v, revs[key], f); err != nil {
				return err
			}
		}
		if !resp.More || len(resp.Kvs) == 0 {
			s.inlines.prune(gen)
			return nil
		}
		from = string(resp.Kvs[len(resp.Kvs)-1].Key) + "\x00"
	}
}

// needValue marks, in what inlineSeen.lookup returns, a key whose value a
// scan must read.
const needValue = -2

// inlineSeen remembers the manifests scans found inline: by key, the mod
// revision they had and the file's size (-1 if not decoded). It is only a
// shortcut: a key it does not know, or knows at another mod revision, is
// read again.
type inlineSeen struct {
	mu  sync.Mutex
	m   map[string]inlineEntry
	gen uint64
}

type inlineEntry struct {
	modRev, size int64
	gen          uint64 // of the last scan that saw it
}

// begin starts a scan and returns its generation.
func (c *inlineSeen) begin() uint64 {
	c.mu.Lock()
	defer c.mu.Unlock()
	c.gen++
	return c.gen
}

// lookup returns, for each kv listed (keys and mod revisions), the file's
// size when it is known inline at that mod revision (with its size, if
// sized), else needValue; and the keys whose values must be read.
func (c *inlineSeen) lookup(kvs []*mvccpb.KeyValue, sized bool, gen uint64) ([]int64, []string) {
	c.mu.Lock()
	defer c.mu.Unlock()
	out := make([]int64, len(kvs))
	var need []string
	for i, kv := range kvs {
		e, ok := c.m[string(kv.Key)]
		if ok && e.modRev == kv.ModRevision && (!sized || e.size >= 0) {
			e.gen = gen
			c.m[string(kv.Key)] = e
			out[i] = e.size
			continue
		}
		out[i] = needValue
		need = append(need, string(kv.Key))
	}
	return out, need
}

// note records that key holds an inline manifest at modRev, of a file of
// size bytes (-1: not decoded; a size known at that revision is kept).
func (c *inlineSeen) note(key string, modRev, size int64) {
	c.mu.Lock()
	defer c.mu.Unlock()
	if c.m == nil {
		c.m = map[string]inlineEntry{}
	}
	if e, ok := c.m[key]; ok && e.modRev == modRev && size < 0 {
		size = e.size
	}
	c.m[key] = inlineEntry{modRev: modRev, size: size, gen: c.gen}
}

// prune forgets the keys that the scan of generation gen, which listed
// every manifest, did not find (deleted), nor any later scan.
func (c *inlineSeen) prune(gen uint64) {
	c.mu.Lock()
	defer c.mu.Unlock()
	for k, e := range c.m {
		if e.gen < gen {
			delete(c.m, k)
		}
	}
}

// Verify checks that every block of every stored file version can be
// reconstructed: at least Data of its shards are on live workers and pass
// their checksums. It reads every shard, so it is for tests and audits.
func (s *Service) Verify(ctx context.Context) error {
	var errs []error
	err := s.eachManifest(ctx, true, func(key string, _ int64, m *manifest) error {
		if m.inline() {
			if _, err := s.open(m); err != nil {
				errs = append(errs, err)
			}
			return nil
		}
		info, err := m.fileInfo()
		if err != nil {
			errs = append(errs, fmt.Errorf("%s: %w", key, err))
			return nil
		}
		src := shardSource{s, m, info}
		for b := range info.Blocks() {
			good := 0
			for i := range info.Layout.Shards() {
				data, err := src.ReadShard(ctx, b, i)
				if err == nil && len(data) == info.ShardLen(b) && erasure.SumShard(data) == info.Sums[b][i] {
					good++
				}
			}
			if good < info.Layout.Data {
				errs = append(errs, fmt.Errorf("file %s v%d block %d: %d good shards, %d needed", m.FileID, m.Version, b, good, info.Layout.Data))
			}
		}
		return nil
	})
	if err != nil {
		return err
	}
	return errors.Join(errs...)
}
