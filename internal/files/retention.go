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
//     its revision, so pool replicas agree and a restart loses nothing
//     (see usage for users without a quota). A commit that would take it
//     past Limits.StorageBytes is refused, and a write whose size is known
//     is refused before its first shard.

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

// usage is a user's storage use as one transaction reads and moves it.
// It is counted (the record usage/storage/<user>, moved by compare-and-
// swap) only for a user whose record exists, which the first write under
// a storage quota creates: the writes of other users compare only that
// the record is still absent, and mark that they changed the user's files
// (usage/changed/<user>, written blind), so that they never contend with
// each other and a record created from a count of the manifests misses no
// write that committed during the count.
type usage struct {
	user       string
	tracked    bool
	use        int64 // with tracked: the bytes of the user's versions
	rev        int64 // the record's mod revision; 0: absent (counted from the manifests)
	changedRev int64 // with rev 0: the mod revision of the change mark before the count
}

// readUsage reads user's use: counted when track is set or the record
// exists, else only noted absent.
func (s *Service) readUsage(ctx context.Context, user string, track bool) (usage, error) {
	u := usage{user: user}
	txn, err := s.cli.Txn(ctx).Then(clientv3.OpGet(s.keys.usage(user)), clientv3.OpGet(s.keys.usageChanged(user))).Commit()
	if err != nil {
		return u, serving.EtcdError(err)
	}
	if kvs := txn.Responses[0].GetResponseRange().Kvs; len(kvs) > 0 {
		n, err := strconv.ParseInt(string(kvs[0].Value), 10, 64)
		if err != nil {
			return u, status.Errorf(codes.DataLoss, "the storage use of %s is unreadable: %v", user, err)
		}
		u.tracked, u.use, u.rev = true, n, kvs[0].ModRevision
		return u, nil
	}
	if !track {
		return u, nil
	}
	if kvs := txn.Responses[1].GetResponseRange().Kvs; len(kvs) > 0 {
		u.changedRev = kvs[0].ModRevision
	}
	u.tracked = true
	u.use, err = s.countUsage(ctx, user)
	return u, err
}

// move returns the transaction's part that moves the use by delta.
func (u usage) move(k keys, delta int64) ([]clientv3.Cmp, []clientv3.Op) {
	key := k.usage(u.user)
	put := clientv3.OpPut(key, strconv.FormatInt(max(u.use+delta, 0), 10))
	switch {
	case !u.tracked:
		return []clientv3.Cmp{clientv3.Compare(clientv3.CreateRevision(key), "=", 0)},
			[]clientv3.Op{clientv3.OpPut(k.usageChanged(u.user), "")}
	case u.rev == 0:
		return []clientv3.Cmp{
			clientv3.Compare(clientv3.CreateRevision(key), "=", 0),
			clientv3.Compare(clientv3.ModRevision(k.usageChanged(u.user)), "=", u.changedRev),
		}, []clientv3.Op{put}
	}
	return []clientv3.Cmp{clientv3.Compare(clientv3.ModRevision(key), "=", u.rev)}, []clientv3.Op{put}
}

// usageChanged reports whether a transaction built on u may have failed
// because of it: read it again.
func (s *Service) usageChanged(ctx context.Context, u usage) (bool, error) {
	now, err := s.readUsage(ctx, u.user, false)
	if err != nil {
		return false, err
	}
	return now.tracked != u.tracked || now.rev != u.rev || u.tracked && u.rev == 0, nil
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
	u, err := s.readUsage(ctx, user, true)
	return u.use, err
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
	u, err := s.readUsage(ctx, req.user, true)
	if err != nil {
		return nil, err
	}
	use := u.use
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
