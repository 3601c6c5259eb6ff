package files

import (
	"context"
	"encoding/base64"
	"encoding/json"
	"errors"
	"fmt"
	"strconv"
	"strings"
	"time"

	"go.etcd.io/etcd/api/v3/v3rpc/rpctypes"
	clientv3 "go.etcd.io/etcd/client/v3"

	"github.com/hivemind/taskworker/internal/erasure"
)

// A segment holds the per-block part of a large version's manifest (the
// checksums, and where the shards are) for a run of SegmentBlocks blocks,
// as its own etcd value: segments/<file>/<write>/<n>. A version with more
// blocks than one value holds keeps only its head (the manifest without
// blocks) under manifests/, so a file's size is bounded by the workers'
// capacity, not by etcd's request limit. Segments are named by the write,
// like its shards, so two revisions racing for the same version never
// overwrite each other's; they are written before the commit and are
// reachable only from a committed head, so nothing half-written is read.
// Each segment has its own list of workers, so repair changes the one
// segment that holds a block, with compare-and-swap on it alone.
type segment struct {
	Sums      string    `json:"sums"`
	Workers   []string  `json:"workers"`
	Placement [][]int16 `json:"placement"`
}

// errSegments is wrapped by the errors of a version whose segments are
// not all there: it was deleted while it was read, or its values are bad.
var errSegments = errors.New("segments missing or unreadable")

// segmentBlocks is how many blocks one etcd value holds in layout l.
func (s *Service) segmentBlocks(l erasure.Layout) int64 {
	if s.cfg.SegmentBlocks > 0 {
		return int64(s.cfg.SegmentBlocks)
	}
	return maxBlocks(l, s.cfg.MaxManifestBytes)
}

// segmented reports whether m's blocks are in segments.
func (m *manifest) segmented() bool { return m.Segments > 0 }

// segmentOf returns the segment holding block b.
func (m *manifest) segmentOf(b int64) int { return int(b / int64(m.SegmentBlocks)) }

// segmentBlockRange returns the blocks [from, to) of segment n.
func (m *manifest) segmentBlockRange(n int) (from, to int64) {
	from = int64(n) * int64(m.SegmentBlocks)
	return from, min(from+int64(m.SegmentBlocks), int64(len(m.Placement)))
}

// segment builds segment n's value from m's blocks, with a worker list of
// its own.
func (m *manifest) segment(n int) (string, error) {
	from, to := m.segmentBlockRange(n)
	raw, err := m.sumBytes()
	if err != nil {
		return "", err
	}
	width := 0
	if len(m.Placement) > 0 {
		width = len(raw) / len(m.Placement)
	}
	seg := segment{Sums: base64.StdEncoding.EncodeToString(raw[from*int64(width) : to*int64(width)])}
	index := map[string]int16{}
	for b := from; b < to; b++ {
		row := make([]int16, len(m.Placement[b]))
		for i := range row {
			id := m.holder(b, i)
			if id == "" {
				row[i] = -1
				continue
			}
			j, ok := index[id]
			if !ok {
				j = int16(len(seg.Workers))
				index[id] = j
				seg.Workers = append(seg.Workers, id)
			}
			row[i] = j
		}
		seg.Placement = append(seg.Placement, row)
	}
	out, err := json.Marshal(seg)
	return string(out), err
}

// splitIntoSegments records in m that its blocks go into segments of per
// blocks, if it has more than that.
func (m *manifest) splitIntoSegments(per int64) {
	blocks := int64(len(m.Placement))
	if blocks <= per {
		m.Segments, m.SegmentBlocks = 0, 0
		return
	}
	m.SegmentBlocks = int(per)
	m.Segments = int((blocks + per - 1) / per)
}

// putSegments writes m's segments, several to a transaction as long as
// they fit in MaxManifestBytes (below etcd's request limit). They are
// invisible until the commit puts the head that counts them.
func (s *Service) putSegments(ctx context.Context, m *manifest) error {
	var (
		ops  []clientv3.Op
		size int
	)
	flush := func() error {
		if len(ops) == 0 {
			return nil
		}
		_, err := s.cli.Txn(ctx).Then(ops...).Commit()
		ops, size = nil, 0
		return err
	}
	for n := range m.Segments {
		val, err := m.segment(n)
		if err != nil {
			return err
		}
		if size+len(val) > s.cfg.MaxManifestBytes || len(ops) >= 64 {
			if err := flush(); err != nil {
				return err
			}
		}
		ops = append(ops, clientv3.OpPut(s.keys.segment(m.FileID, m.WriteID, n), val))
		size += len(val)
	}
	return flush()
}

// loadSegments reads m's segments as they were at etcd revision rev (the
// revision m was read at, so that the head and its blocks are one view)
// and fills in its blocks, recording each segment's revision for repair.
func (s *Service) loadSegments(ctx context.Context, m *manifest, rev int64) error {
	if !m.segmented() {
		return nil
	}
	if m.SegmentBlocks <= 0 {
		return fmt.Errorf("manifest of %s: %w: %d segments of %d blocks", m.FileID, errSegments, m.Segments, m.SegmentBlocks)
	}
	prefix := s.keys.writeSegments(m.FileID, m.WriteID)
	end := clientv3.GetPrefixRangeEnd(prefix)
	var (
		raw     []byte
		from    = prefix
		workers = map[string]int16{}
	)
	m.Workers, m.Placement, m.segRevs = nil, nil, nil
	for {
		resp, err := s.cli.Get(ctx, from, clientv3.WithRange(end), clientv3.WithRev(rev), clientv3.WithLimit(8))
		if err != nil {
			return err
		}
		for _, kv := range resp.Kvs {
			n, err := strconv.Atoi(strings.TrimPrefix(string(kv.Key), prefix))
			if err != nil || n != len(m.segRevs) {
				return fmt.Errorf("manifest of %s: %w: unexpected key %s", m.FileID, errSegments, kv.Key)
			}
			var seg segment
			if err := json.Unmarshal(kv.Value, &seg); err != nil {
				return fmt.Errorf("manifest of %s: %w: segment %d: %v", m.FileID, errSegments, n, err)
			}
			sums, err := base64.StdEncoding.DecodeString(seg.Sums)
			if err != nil {
				return fmt.Errorf("manifest of %s: %w: segment %d: bad sums: %v", m.FileID, errSegments, n, err)
			}
			raw = append(raw, sums...)
			for _, row := range seg.Placement {
				out := make([]int16, len(row))
				for i, j := range row {
					if j < 0 || int(j) >= len(seg.Workers) {
						out[i] = -1
						continue
					}
					id := seg.Workers[j]
					k, ok := workers[id]
					if !ok {
						k = int16(len(m.Workers))
						workers[id] = k
						m.Workers = append(m.Workers, id)
					}
					out[i] = k
				}
				m.Placement = append(m.Placement, out)
			}
			m.segRevs = append(m.segRevs, kv.ModRevision)
		}
		if !resp.More || len(resp.Kvs) == 0 {
			break
		}
		from = string(resp.Kvs[len(resp.Kvs)-1].Key) + "\x00"
	}
	if len(m.segRevs) != m.Segments {
		return fmt.Errorf("manifest of %s: %w: %d of %d segments", m.FileID, errSegments, len(m.segRevs), m.Segments)
	}
	m.Sums = base64.StdEncoding.EncodeToString(raw)
	return nil
}

// compacted reports an error of a read at a revision etcd has compacted
// away since: reading again at the current one helps.
func compacted(err error) bool { return errors.Is(err, rpctypes.ErrCompacted) }

// dropSegments deletes the segments of a write that will not be committed,
// in the background; what it misses, the collector takes with the write's
// intent (see collect).
func (s *Service) dropSegments(m *manifest) {
	if !m.segmented() {
		return
	}
	go func() {
		ctx, cancel := context.WithTimeout(context.Background(), time.Minute)
		defer cancel()
		if _, err := s.cli.Delete(ctx, s.keys.writeSegments(m.FileID, m.WriteID), clientv3.WithPrefix()); err != nil {
			s.log.Warn("deleting a failed write's segments; the collector will", "file", m.FileID, "write", m.WriteID, "err", err)
		}
	}()
}
