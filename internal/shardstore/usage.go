package shardstore

import (
	"context"
	"errors"
	"fmt"
	"io/fs"
)

// Usage is what the store occupies and what the filesystem under it has left.
type Usage struct {
	Shards     int64
	ShardBytes int64 // on disk, headers and footers included
	TempFiles  int64
	TempBytes  int64
	DiskTotal  uint64 // the filesystem's size; 0 where unknown
	DiskFree   uint64 // bytes an unprivileged writer can still use; 0 where unknown
}

// Usage walks the store and asks the filesystem for its free space. It costs a directory read per write
// ID and a stat per shard: a worker reporting usage often should cache it.
func (s *Store) Usage(ctx context.Context) (Usage, error) {
	if err := s.begin(); err != nil {
		return Usage{}, err
	}
	defer s.ops.Done()
	var u Usage
	err := s.walk(ctx, "", func(e entry) error {
		fi, err := e.de.Info()
		if errors.Is(err, fs.ErrNotExist) {
			return nil
		}
		if err != nil {
			return err
		}
		if e.temp {
			u.TempFiles++
			u.TempBytes += fi.Size()
		} else {
			u.Shards++
			u.ShardBytes += fi.Size()
		}
		return nil
	}, nil)
	if err != nil {
		return Usage{}, fmt.Errorf("shardstore: usage: %w", err)
	}
	u.DiskTotal, u.DiskFree, err = diskSpace(s.cfg.Dir)
	if err != nil {
		return Usage{}, fmt.Errorf("shardstore: usage: %w", err)
	}
	return u, nil
}
