package files

import (
	"context"
	"errors"
	"io"
	"time"

	clientv3 "go.etcd.io/etcd/client/v3"

	v1 "github.com/hivemind/taskworker/api/taskworker/v1"
)

var errConflict = errors.New("the manifest kept changing during repair")

// collect deletes shards that no manifest refers to (failed writes,
// deleted files) once they are GCMinAge old, and damage reports of writes
// that are gone.
func (s *Service) collect(ctx context.Context) error {
	refs := map[string]bool{}
	err := s.eachManifest(ctx, func(_ string, _ int64, m *manifest) error {
		refs[m.FileID+"/"+m.WriteID] = true
		return nil
	})
	if err != nil {
		return err
	}
	cutoff := time.Now().Add(-s.cfg.GCMinAge).UnixMilli()
	for _, w := range s.workers.StorageWorkers() {
		client, ok := s.workers.ShardClient(w.ID)
		if !ok {
			continue
		}
		stream, err := client.ListShards(ctx, &v1.ListShardsRequest{})
		if err != nil {
			s.log.Warn("listing shards", "worker", w.ID, "err", err)
			continue
		}
		var garbage []*v1.WriteRef
		for {
			msg, err := stream.Recv()
			if errors.Is(err, io.EOF) {
				break
			}
			if err != nil {
				s.log.Warn("listing shards", "worker", w.ID, "err", err)
				break
			}
			if ref := msg.Write; ref != nil && !refs[ref.FileId+"/"+ref.WriteId] && msg.NewestMs < cutoff {
				garbage = append(garbage, ref)
			}
		}
		for len(garbage) > 0 {
			n := min(len(garbage), 500)
			if _, err := client.DeleteShards(ctx, &v1.DeleteShardsRequest{Writes: garbage[:n]}); err != nil {
				s.log.Warn("deleting garbage shards", "worker", w.ID, "err", err)
				break
			}
			garbage = garbage[n:]
		}
	}
	resp, err := s.cli.Get(ctx, s.keys.allDamage(), clientv3.WithPrefix(), clientv3.WithKeysOnly())
	if err != nil {
		return err
	}
	for _, kv := range resp.Kvs {
		if id, write, _, _, ok := s.keys.parseDamage(string(kv.Key)); !ok || !refs[id+"/"+write] {
			_, _ = s.cli.Delete(ctx, string(kv.Key))
		}
	}
	return nil
}
