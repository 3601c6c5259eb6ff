package files

import (
	"fmt"
	"strings"
	"testing"

	"github.com/hivemind/taskworker/internal/erasure"
)

// A manifest of as many blocks as maxBlocks allows, with the widest
// placement indexes and 500 workers of the longest ids, still fits in one
// etcd request, for every layout the pool picks.
func TestManifestAtTheLimitFitsInEtcd(t *testing.T) {
	for workers := 1; workers <= 6; workers++ { // 6 and more: 4+2
		l, err := erasure.LayoutFor(workers)
		if err != nil {
			t.Fatal(err)
		}
		t.Run(l.String(), func(t *testing.T) {
			blocks := maxBlocks(l, DefaultMaxManifestBytes)
			m := &manifest{
				fileRecord: fileRecord{FileID: newID(), Filename: strings.Repeat("n", 1024), Version: 1 << 40, Size: 1 << 50,
					SHA256: strings.Repeat("f", 64), Layout: l.String(), BlockSize: erasure.MaxBlockSize},
				Owner: strings.Repeat("u", 128), WriteID: newID(),
			}
			sums := make([][]erasure.Sum, blocks)
			for b := range sums {
				sums[b] = make([]erasure.Sum, l.Shards())
			}
			m.Sums = encodeSums(sums)
			for i := range 500 {
				m.Workers = append(m.Workers, fmt.Sprintf("%0128d", i))
			}
			m.Placement = make([][]int16, blocks)
			for b := range m.Placement {
				m.Placement[b] = make([]int16, l.Shards())
				for i := range m.Placement[b] {
					m.Placement[b][i] = 499
				}
			}
			val, err := m.marshal()
			if err != nil {
				t.Fatal(err)
			}
			if len(val) > DefaultMaxManifestBytes {
				t.Fatalf("%d blocks: a %d-byte manifest, over %d", blocks, len(val), DefaultMaxManifestBytes)
			}
			t.Logf("%s: %d blocks (%d GiB at 8 MiB), a manifest of %d bytes", l, blocks, blocks*8>>10, len(val))
		})
	}
}
