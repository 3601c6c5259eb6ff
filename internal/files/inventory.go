package files

import (
	"context"
	"errors"
	"io"
	"strconv"
	"time"

	clientv3 "go.etcd.io/etcd/client/v3"

	v1 "github.com/hivemind/taskworker/api/taskworker/v1"
)

// inventory is what the live storage workers said they hold, in one pass:
// per worker, per write, the (block, shard) pairs, and each write's newest
// shard. A worker whose listing failed is absent: nothing is concluded
// about it.
type inventory struct {
	held   map[string]map[writeRef]map[blockShard]bool
	newest map[string]map[writeRef]int64 // worker -> write -> unix ms
}

type writeRef struct{ file, write string }

type blockShard struct {
	block int64
	shard int32
}

func (inv *inventory) listed(worker string) bool { _, ok := inv.held[worker]; return ok }

func (inv *inventory) has(worker string, w writeRef, b int64, i int) bool {
	return inv.held[worker][w][blockShard{b, int32(i)}]
}

// takeInventory lists the shards of every live storage worker, a page (one
// write, at most a few thousand shards) per message.
func (s *Service) takeInventory(ctx context.Context) *inventory {
	inv := &inventory{held: map[string]map[writeRef]map[blockShard]bool{}, newest: map[string]map[writeRef]int64{}}
	for _, w := range s.workers.StorageWorkers() {
		held, newest, err := s.listWorker(ctx, w.ID)
		if err != nil {
			if ctx.Err() == nil {
				s.log.Warn("listing a worker's shards", "worker", w.ID, "err", err)
			}
			continue
		}
		inv.held[w.ID], inv.newest[w.ID] = held, newest
	}
	return inv
}

func (s *Service) listWorker(ctx context.Context, id string) (map[writeRef]map[blockShard]bool, map[writeRef]int64, error) {
	client, ok := s.workers.ShardClient(id)
	if !ok {
		return nil, nil, errors.New("not live")
	}
	stream, err := client.ListShards(ctx, &v1.ListShardsRequest{})
	if err != nil {
		return nil, nil, err
	}
	held, newest := map[writeRef]map[blockShard]bool{}, map[writeRef]int64{}
	for {
		msg, err := stream.Recv()
		if errors.Is(err, io.EOF) {
			return held, newest, nil
		}
		if err != nil {
			return nil, nil, err
		}
		if msg.Write == nil {
			continue
		}
		ref := writeRef{msg.Write.FileId, msg.Write.WriteId}
		set := held[ref]
		if set == nil {
			set = map[blockShard]bool{}
			held[ref] = set
		}
		for _, k := range msg.Shards {
			set[blockShard{k.Block, k.Shard}] = true
		}
		newest[ref] = max(newest[ref], msg.NewestMs)
	}
}

// reconcile compares the workers' inventories with the manifests (the
// anti-entropy pass): a shard a manifest places on a live worker that the
// worker does not list is recorded as damaged, so that the repairer
// rebuilds it and Status counts it, without waiting for a read. Then it
// collects garbage from the same inventory (see collect).
//
// The manifests are read before the workers are listed: a shard in a
// manifest was stored before the manifest was committed, so if the listing
// that follows lacks it, it is gone (not merely not yet written).
func (s *Service) reconcile(ctx context.Context, suspects map[writeRef]time.Time) error {
	type placed struct {
		ref    writeRef
		worker string
		block  int64
		shard  int
	}
	var expected []placed
	err := s.eachShardedManifest(ctx, true, func(_ string, _ int64, m *manifest) error {
		ref := writeRef{m.FileID, m.WriteID}
		for b := range m.Placement {
			for i := range m.Placement[b] {
				if h := m.holder(int64(b), i); h != "" {
					expected = append(expected, placed{ref, h, int64(b), i})
				}
			}
		}
		return nil
	})
	if err != nil {
		return err
	}
	inv := s.takeInventory(ctx)
	if ctx.Err() != nil {
		return ctx.Err()
	}
	damaged, err := s.damage(ctx, "")
	if err != nil {
		return err
	}
	found := 0
	for _, p := range expected {
		if !inv.listed(p.worker) || inv.has(p.worker, p.ref, p.block, p.shard) {
			continue
		}
		key := s.keys.damage(p.ref.file, p.ref.write, p.block, p.shard)
		if damaged[key] {
			continue
		}
		if _, err := s.cli.Put(ctx, key, ""); err != nil {
			return err
		}
		damaged[key] = true
		found++
	}
	if found > 0 {
		s.log.Warn("workers lack shards their manifests place on them; rebuilding", "shards", found)
		s.Kick()
	}
	if _, err := s.cli.Put(ctx, s.keys.inventoryChecked(), strconv.FormatInt(time.Now().UnixMilli(), 10)); err != nil {
		return err
	}
	return s.collect(ctx, inv, suspects)
}

// inventoryChecked returns when an inventory pass last completed (unix ms;
// 0 if none has).
func (s *Service) inventoryChecked(ctx context.Context) (int64, error) {
	resp, err := s.cli.Get(ctx, s.keys.inventoryChecked())
	if err != nil || len(resp.Kvs) == 0 {
		return 0, err
	}
	ms, _ := strconv.ParseInt(string(resp.Kvs[0].Value), 10, 64)
	return ms, nil
}

// intents returns the writes this network started and has neither
// committed nor collected (see write), with when each was last tended
// (unix ms; see tendIntent),
// and the etcd revision they were read at.
func (s *Service) intents(ctx context.Context) (map[writeRef]int64, int64, error) {
	resp, err := s.cli.Get(ctx, s.keys.allWrites(), clientv3.WithPrefix())
	if err != nil {
		return nil, 0, err
	}
	out := map[writeRef]int64{}
	for _, kv := range resp.Kvs {
		if file, write, ok := s.keys.parseWrite(string(kv.Key)); ok {
			out[writeRef{file, write}], _ = strconv.ParseInt(string(kv.Value), 10, 64)
		}
	}
	return out, resp.Header.Revision, nil
}
