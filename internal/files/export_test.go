package files

import (
	"context"
	"sync/atomic"
	"testing"
)

// ChangeManifestBeforeRepairCommits makes the first n of the repairer's
// window commits fail their compare-and-swap: just before each, the
// manifest is written again unchanged (a new mod revision, as any other
// change would give it). It returns the count of commits attempted.
func ChangeManifestBeforeRepairCommits(t *testing.T, n int64) *atomic.Int64 {
	var calls atomic.Int64
	beforeRepairCommit = func(s *Service, key string) {
		if calls.Add(1) > n {
			return
		}
		ctx := context.Background()
		resp, err := s.cli.Get(ctx, key)
		if err != nil || len(resp.Kvs) != 1 {
			t.Errorf("reading %s: %v", key, err)
			return
		}
		if _, err := s.cli.Put(ctx, key, string(resp.Kvs[0].Value)); err != nil {
			t.Errorf("writing %s: %v", key, err)
		}
	}
	t.Cleanup(func() { beforeRepairCommit = nil })
	return &calls
}
