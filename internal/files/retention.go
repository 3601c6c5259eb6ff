package files

import (
	"context"
	"fmt"
	"io"
	"strconv"
	"time"

	clientv3 "go.etcd.io/etcd/client/v3"
	"google.golang.org/grpc/codes"
	"google.golang.org/grpc/status"

	"github.com/hivemind/taskworker/internal/quota"
	"github.com/hivemind/taskworker/internal/serving"
)

// Retention and the storage quota are both kept by the commit transaction
// that adds a version (see commit):
//
//   - retention: the commit deletes the manifests (and segments) of the
//     file's versions that the new one leaves beyond its policy (keep the
//     last KeepVersions, and those younger than KeepFor), and their shards
//     go as a deleted file's do (dropWrite now, the collector for what it
//     misses);
//   - the quota: usage/storage/<user> holds the bytes of all the user's
//     versions (plaintext sizes, as the user sees them); every transaction
//     that adds or deletes manifests updates it, with compare-and-swap on
//     its revision, so pool replicas agree and a restart loses nothing. A
//     commit that would take it past Limits.StorageBytes is refused, and a
//     write whose size is known is refused before its first shard.

// maxPrunedPerCommit bounds the versions one commit deletes (etcd bounds a
// transaction's operations); more, after the policy was lowered, go at the
// next commits.
const maxPrunedPerCommit = 32

// retention is the versions a file keeps.
type retention struct {
	versions int64
	keepFor  time.Duration
}

// retentionOf is a file's retention: its own count if it has one, else
// its owner's, else the default; and its owner's KeepFor.
func retentionOf(l quota.Limits, perFile int64) retention {
	n := perFile
	if n <= 0 {
		n = l.KeepVersions
	}
	if n <= 0 {
		n = quota.DefaultKeepVersions
	}
	return retention{versions: n, keepFor: l.KeepFor}
}

// limits returns user's quotas (the defaults without a Limits hook).
func (s *Service) limits(ctx context.Context, user string) (quota.Limits, error) {
	if s.cfg.Limits == nil {
		return quota.Limits{}, nil
	}
	l, err := s.cfg.Limits(ctx, user)
	if err != nil {
		if _, ok := status.FromError(err); ok {
			return l, err
		}
		return l, status.Errorf(codes.Unavailable, "reading the quotas of %s: %v; try again", user, err)
	}
	return l, nil
}

// prunedVersion is a version a commit deletes.
type prunedVersion struct {
	key     string
	size    int64
	writeID string
	inline  bool
}

// prunable returns the versions of a file that one more version would
// leave beyond keep, oldest first, at most maxPrunedPerCommit.
func (s *Service) prunable(ctx context.Context, fileID string, keep retention, now time.Time) ([]prunedVersion, error) {
	prefix := s.keys.manifests(fileID)
	list, err := s.cli.Get(ctx, prefix, clientv3.WithPrefix(), clientv3.WithKeysOnly(), clientv3.WithSort(clientv3.SortByKey, clientv3.SortAscend))
	if err != nil {
		return nil, serving.EtcdError(err)
	}
	excess := min(int64(len(list.Kvs))+1-keep.versions, maxPrunedPerCommit)
	if excess <= 0 {
		return nil, nil
	}
	from, last := string(list.Kvs[0].Key), string(list.Kvs[excess-1].Key)
	resp, err := s.cli.Get(ctx, from, clientv3.WithRange(last+"\x00"), clientv3.WithRev(list.Header.Revision))
	if err != nil {
		return nil, serving.EtcdError(err)
	}
	var out []prunedVersion
	for _, kv := range resp.Kvs {
		m, err := unmarshalManifest(kv.Value)
		if err != nil {
			return nil, status.Errorf(codes.DataLoss, "file %s: unreadable manifest %s: %v", fileID, kv.Key, err)
		}
		if keep.keepFor > 0 && now.Sub(time.UnixMilli(m.ModifiedMs)) < keep.keepFor {
			continue
		}
		out = append(out, prunedVersion{key: string(kv.Key), size: m.Size, writeID: m.WriteID, inline: m.inline()})
	}
	return out, nil
}

// dropPruned deletes the shards of versions a commit deleted. The intent
// records let the collector finish what dropWrite misses.
func (s *Service) dropPruned(ctx context.Context, fileID string, pruned []prunedVersion) {
	for _, p := range pruned {
		if p.inline {
			continue
		}
		_, _ = s.cli.Put(ctx, s.keys.write(fileID, p.writeID), fmt.Sprint(time.Now().UnixMilli()))
		s.dropWrite(&manifest{fileRecord: fileRecord{FileID: fileID}, WriteID: p.writeID})
	}
}

// usage returns the bytes of user's stored versions and the mod revision
// of the record that holds them (0: none yet; they are then counted from
// the manifests, once, and the next transaction creates the record).
func (s *Service) usage(ctx context.Context, user string) (int64, int64, error) {
	resp, err := s.cli.Get(ctx, s.keys.usage(user))
	if err != nil {
		return 0, 0, serving.EtcdError(err)
	}
	if len(resp.Kvs) > 0 {
		n, err := strconv.ParseInt(string(resp.Kvs[0].Value), 10, 64)
		if err != nil {
			return 0, 0, status.Errorf(codes.DataLoss, "the storage use of %s is unreadable: %v", user, err)
		}
		return n, resp.Kvs[0].ModRevision, nil
	}
	n, err := s.countUsage(ctx, user)
	return n, 0, err
}

// countUsage adds up the sizes of every version of user's files.
func (s *Service) countUsage(ctx context.Context, user string) (int64, error) {
	prefix := s.keys.userFiles(user)
	end := clientv3.GetPrefixRangeEnd(prefix)
	var total int64
	for from := prefix; ; {
		resp, err := s.cli.Get(ctx, from, clientv3.WithRange(end), clientv3.WithKeysOnly(), clientv3.WithLimit(500))
		if err != nil {
			return 0, serving.EtcdError(err)
		}
		for _, kv := range resp.Kvs {
			id := string(kv.Key[len(prefix):])
			err := s.eachVersion(ctx, id, func(m *manifest) {
				if m.Owner == user {
					total += m.Size
				}
			})
			if err != nil {
				return 0, err
			}
		}
		if !resp.More || len(resp.Kvs) == 0 {
			return total, nil
		}
		from = string(resp.Kvs[len(resp.Kvs)-1].Key) + "\x00"
	}
}

// eachVersion calls f with the head of each version of a file.
func (s *Service) eachVersion(ctx context.Context, fileID string, f func(*manifest)) error {
	prefix := s.keys.manifests(fileID)
	end := clientv3.GetPrefixRangeEnd(prefix)
	for from := prefix; ; {
		resp, err := s.cli.Get(ctx, from, clientv3.WithRange(end), clientv3.WithLimit(16))
		if err != nil {
			return serving.EtcdError(err)
		}
		for _, kv := range resp.Kvs {
			if m, err := unmarshalManifest(kv.Value); err == nil {
				f(m)
			}
		}
		if !resp.More || len(resp.Kvs) == 0 {
			return nil
		}
		from = string(resp.Kvs[len(resp.Kvs)-1].Key) + "\x00"
	}
}

// StorageUsed returns the bytes of all of user's stored file versions, as
// the storage quota counts them.
func (s *Service) StorageUsed(ctx context.Context, user string) (int64, error) {
	n, _, err := s.usage(ctx, user)
	return n, err
}

// setUsage is the transaction's part that moves user's use from use (at
// mod revision rev) to next.
func (s *Service) setUsage(user string, rev, next int64) (clientv3.Cmp, clientv3.Op) {
	key := s.keys.usage(user)
	return clientv3.Compare(clientv3.ModRevision(key), "=", rev), clientv3.OpPut(key, strconv.FormatInt(max(next, 0), 10))
}

// overQuota is the status of a write that would take its user past the
// storage quota: it says the quota, the use and the need, and what to do.
func overQuota(user, what string, l quota.Limits, use int64, need string) error {
	return status.Errorf(codes.ResourceExhausted, "storage quota of %s is %s; %s in use, %s needs %s: delete files or ask an admin to raise it (taskworker quota set)",
		user, formatBytes(l.StorageBytes), formatBytes(use), what, need)
}

// formatBytes prints n in the largest binary unit it reaches: 512 B,
// 9.5 MiB.
func formatBytes(n int64) string {
	const units = "KMGTPE"
	if n < 1024 && n > -1024 {
		return fmt.Sprintf("%d B", n)
	}
	f, i := float64(n)/1024, 0
	for (f >= 1024 || f <= -1024) && i < len(units)-1 {
		f /= 1024
		i++
	}
	s := strconv.FormatFloat(f, 'f', 1, 64)
	if len(s) > 2 && s[len(s)-2:] == ".0" {
		s = s[:len(s)-2]
	}
	return s + " " + units[i:i+1] + "iB"
}

// budgetReader refuses a stream of unknown size once it passes the bytes
// the user's quota leaves it.
type budgetReader struct {
	r      io.Reader
	budget int64
	read   int64
	over   func(read int64) error
}

func (b *budgetReader) Read(p []byte) (int, error) {
	n, err := b.r.Read(p)
	b.read += int64(n)
	if b.read > b.budget {
		return 0, b.over(b.read)
	}
	return n, err
}

// checkQuota refuses, before any shard is stored, a write that would take
// its user past the storage quota: at once when its size is known, else as
// soon as it passes what the quota leaves (the reader returned). A
// revision may always be as large as what it frees by retention.
func (s *Service) checkQuota(ctx context.Context, req writeRequest, cur fileRecord, r io.Reader) (io.Reader, error) {
	l := req.limits
	if l.StorageBytes <= 0 {
		return r, nil
	}
	use, _, err := s.usage(ctx, req.user)
	if err != nil {
		return nil, err
	}
	var freed int64
	if req.revise() {
		pruned, err := s.prunable(ctx, req.fileID, retentionOf(l, req.keepOr(cur.KeepVersions)), time.Now())
		if err != nil {
			return nil, err
		}
		for _, p := range pruned {
			freed += p.size
		}
	}
	allowed := max(l.StorageBytes-use+freed, freed)
	if req.size > 0 {
		if req.size > allowed {
			return nil, overQuota(req.user, req.what, l, use, formatBytes(req.size))
		}
		return r, nil
	}
	return &budgetReader{r: r, budget: allowed, over: func(int64) error {
		return overQuota(req.user, req.what, l, use, "more than "+formatBytes(allowed))
	}}, nil
}
