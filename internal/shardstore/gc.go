package shardstore

import (
	"context"
	"errors"
	"fmt"
	"io/fs"
	"os"
	"time"
)

// GCStats says what GC removed.
type GCStats struct {
	TempFiles  int // temp files of interrupted writes
	TempBytes  int64
	Shards     int // shards not in the keep-set
	ShardBytes int64
	Dirs       int // empty directories
}

// GC removes garbage: temp files no Put of this process is writing (left by a crash or a failed write),
// shards for which keep returns false that were last written more than minAge ago, and empty directories.
// A nil keep keeps every shard. minAge protects shards written after the caller computed its keep-set:
// set it above the time from computing the set to calling GC (minutes, not seconds).
func (s *Store) GC(ctx context.Context, keep func(Key) bool, minAge time.Duration) (GCStats, error) {
	if err := s.begin(); err != nil {
		return GCStats{}, err
	}
	defer s.ops.Done()
	var st GCStats
	cutoff := time.Now().Add(-minAge)
	err := s.walk(ctx, "", func(e entry) error {
		if e.temp {
			s.mu.Lock()
			busy := s.temps[e.path]
			s.mu.Unlock()
			if busy {
				return nil
			}
			size, err := s.remove(e)
			if err == nil {
				st.TempFiles++
				st.TempBytes += size
			}
			return err
		}
		if keep == nil || keep(e.key) {
			return nil
		}
		fi, err := e.de.Info()
		if errors.Is(err, fs.ErrNotExist) {
			return nil
		}
		if err != nil || !fi.ModTime().Before(cutoff) {
			return err
		}
		size, err := s.remove(e)
		if err == nil {
			st.Shards++
			st.ShardBytes += size
		}
		return err
	}, func(dir string) error {
		// Fails on a non-empty directory, which is the point. A Put that created this directory and is
		// about to create its temp file retries (see createTemp).
		if err := os.Remove(dir); err == nil {
			st.Dirs++
		}
		return nil
	})
	if err != nil {
		return st, fmt.Errorf("shardstore: gc: %w", err)
	}
	return st, nil
}

// remove deletes e and returns its size; a file already gone is not an error and has size 0.
func (s *Store) remove(e entry) (int64, error) {
	var size int64
	if fi, err := e.de.Info(); err == nil {
		size = fi.Size()
	}
	if err := os.Remove(e.path); err != nil {
		if errors.Is(err, fs.ErrNotExist) {
			return 0, nil
		}
		return 0, err
	}
	return size, nil
}
