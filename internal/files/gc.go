package files

import (
	"context"
	"errors"
	"strings"
	"time"

	clientv3 "go.etcd.io/etcd/client/v3"

	v1 "github.com/hivemind/taskworker/api/taskworker/v1"
)

var errConflict = errors.New("the manifest kept changing during repair")

// collect deletes the shards of writes that failed, from the inventory
// reconcile took. A write's shards are deleted only if all of these hold:
//
//   - this network started the write: its intent record is in etcd (made
//     before the first shard was stored, removed when the manifest
//     committed), so shards another network wrote are never touched;
//   - the intent is GCMinAge old: a write in progress refreshes it (see
//     tendIntent);
//   - no manifest refers to it, read after the intents;
//   - its newest shard on the worker is GCMinAge old;
//   - it was found so at two passes at least GCInterval apart (suspects
//     remembers the first), so that one stale view deletes nothing.
//
// An intent is removed once no live worker lists its write any more, then
// the write's segments (see collectSegments), and damage reports of writes
// that are gone are dropped.
func (s *Service) collect(ctx context.Context, inv *inventory, suspects map[writeRef]time.Time) error {
	intents, intentsRev, err := s.intents(ctx)
	if err != nil {
		return err
	}
	refs := map[writeRef]bool{}
	err = s.eachShardedManifest(ctx, false, func(_ string, _ int64, m *manifest) error {
		refs[writeRef{m.FileID, m.WriteID}] = true
		return nil
	})
	if err != nil {
		return err
	}
	now := time.Now()
	cutoff := now.Add(-s.cfg.GCMinAge).UnixMilli()
	garbage := map[string][]*v1.WriteRef{}
	seen := map[writeRef]bool{}
	for worker, writes := range inv.newest {
		for ref, newest := range writes {
			seen[ref] = true
			if tended, ours := intents[ref]; !ours || refs[ref] || newest >= cutoff || tended >= cutoff {
				continue
			}
			first, ok := suspects[ref]
			if !ok {
				suspects[ref] = now
				continue
			}
			if now.Sub(first) >= s.cfg.GCInterval {
				garbage[worker] = append(garbage[worker], &v1.WriteRef{FileId: ref.file, WriteId: ref.write})
			}
		}
	}
	for ref := range suspects {
		if _, ours := intents[ref]; !ours || !seen[ref] || refs[ref] {
			delete(suspects, ref)
		}
	}
	for worker, writes := range garbage {
		client, ok := s.workers.ShardClient(worker)
		if !ok {
			continue
		}
		for len(writes) > 0 {
			n := min(len(writes), 500)
			if _, err := client.DeleteShards(ctx, &v1.DeleteShardsRequest{Writes: writes[:n]}); err != nil {
				s.log.Warn("deleting garbage shards", "worker", worker, "err", err)
				break
			}
			s.log.Info("collected the shards of failed writes", "worker", worker, "writes", n)
			writes = writes[n:]
		}
	}
	// An old intent whose write no worker lists is done with (a worker that
	// was away keeps that write's shards: see the package's caveats).
	complete := len(inv.held) == len(s.workers.StorageWorkers())
	for ref, tended := range intents {
		if complete && !seen[ref] && !refs[ref] && tended < cutoff {
			_, _ = s.cli.Delete(ctx, s.keys.write(ref.file, ref.write))
		}
	}
	if err := s.collectSegments(ctx, intents, intentsRev, refs); err != nil {
		return err
	}
	resp, err := s.cli.Get(ctx, s.keys.allDamage(), clientv3.WithPrefix(), clientv3.WithKeysOnly())
	if err != nil {
		return err
	}
	for _, kv := range resp.Kvs {
		if id, write, _, _, ok := s.keys.parseDamage(string(kv.Key)); !ok || !refs[writeRef{id, write}] {
			_, _ = s.cli.Delete(ctx, string(kv.Key))
		}
	}
	return nil
}

// collectSegments deletes the segments of writes that can no longer
// commit: no manifest refers to them and they were created before the
// intents were read (at intentsRev) while their write had no intent then.
// A write's intent is made before its first segment and its commit needs
// the intent, so such a write has failed or was collected; a segment made
// after the intents were read may be a write's that started since, and
// waits for the next pass.
func (s *Service) collectSegments(ctx context.Context, intents map[writeRef]int64, intentsRev int64, refs map[writeRef]bool) error {
	prefix := s.keys.allSegments()
	end := clientv3.GetPrefixRangeEnd(prefix)
	from := prefix
	dead := map[writeRef]bool{}
	for {
		resp, err := s.cli.Get(ctx, from, clientv3.WithRange(end), clientv3.WithKeysOnly(), clientv3.WithLimit(1000))
		if err != nil {
			return err
		}
		for _, kv := range resp.Kvs {
			parts := strings.Split(strings.TrimPrefix(string(kv.Key), prefix), "/")
			if len(parts) != 3 {
				continue
			}
			ref := writeRef{parts[0], parts[1]}
			if _, live := intents[ref]; !live && !refs[ref] && kv.CreateRevision < intentsRev {
				dead[ref] = true
			}
		}
		if !resp.More || len(resp.Kvs) == 0 {
			break
		}
		from = string(resp.Kvs[len(resp.Kvs)-1].Key) + "\x00"
	}
	for ref := range dead {
		if _, err := s.cli.Delete(ctx, s.keys.writeSegments(ref.file, ref.write), clientv3.WithPrefix()); err != nil {
			return err
		}
		s.log.Info("collected the segments of a failed write", "file", ref.file, "write", ref.write)
	}
	return nil
}
