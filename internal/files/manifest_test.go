package files

import (
	"errors"
	"fmt"
	"strings"
	"testing"

	"google.golang.org/grpc/codes"
	"google.golang.org/grpc/status"

	"github.com/hivemind/taskworker/internal/erasure"
	"github.com/hivemind/taskworker/internal/serving"
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
			val := m.marshal()
			if len(val) > DefaultMaxManifestBytes {
				t.Fatalf("%d blocks: a %d-byte manifest, over %d", blocks, len(val), DefaultMaxManifestBytes)
			}
			t.Logf("%s: %d blocks (%d GiB at 8 MiB), a manifest of %d bytes", l, blocks, blocks*8>>10, len(val))

			// The same blocks as one segment of a larger file: as large as
			// that manifest at most, and its head is small.
			m.Placement = append(m.Placement, m.Placement...)
			m.Sums = encodeSums(append(sums, sums...))
			m.splitIntoSegments(blocks)
			if m.Segments != 2 {
				t.Fatalf("%d blocks in segments of %d: %d segments", 2*blocks, blocks, m.Segments)
			}
			seg, err := m.segment(0)
			if err != nil {
				t.Fatal(err)
			}
			if len(seg) > DefaultMaxManifestBytes {
				t.Fatalf("a segment of %d blocks: %d bytes, over %d", blocks, len(seg), DefaultMaxManifestBytes)
			}
			if head := m.marshal(); len(head) > 8<<10 {
				t.Fatalf("a head of %d bytes", len(head))
			}
		})
	}
}

// A write's failure is marked not committed, unless its commit was sent
// and its outcome is unknown.
func TestDefiniteMarksAllButAmbiguousFailures(t *testing.T) {
	unavailable := status.Error(codes.Unavailable, "etcd did not answer")
	for _, tc := range []struct {
		name   string
		err    error
		marked bool
	}{
		{"nil", nil, false},
		{"a status", status.Error(codes.FailedPrecondition, "moved on"), true},
		{"a commit etcd may have applied", &ambiguousError{unavailable}, false},
		{"a wrapped ambiguous commit", fmt.Errorf("commit: %w", &ambiguousError{unavailable}), false},
	} {
		t.Run(tc.name, func(t *testing.T) {
			err := definite(tc.err)
			if serving.IsNotCommitted(err) != tc.marked {
				t.Fatalf("definite(%v) = %v; marked %v, want %v", tc.err, err, !tc.marked, tc.marked)
			}
			if tc.err != nil && status.Code(err) != status.Code(errors.Unwrap(tc.err)) && status.Code(err) != status.Code(tc.err) {
				t.Fatalf("definite(%v) = %v: the code changed", tc.err, err)
			}
		})
	}
	if err := definite(&ambiguousError{unavailable}); err != unavailable {
		t.Fatalf("an ambiguous failure comes back as %v, not as the status it holds", err)
	}
}

// Scans tell an inline file's manifest from its JSON alone, and no name,
// owner or other string makes a sharded version's manifest look inline.
func TestInlineManifestFromJSON(t *testing.T) {
	tricky := `x","layout":"inline","y":"` + `"layout":"inline"`
	for _, tt := range []struct {
		layout, name, owner string
		inline              bool
	}{
		{inlineLayout, "small", "bob", true},
		{inlineLayout, tricky, tricky, true},
		{"4+2", "large", "bob", false},
		{"4+2", tricky, tricky, false},
		{"1+1", `"layout":"inline"`, `\"layout\":\"inline\"`, false},
	} {
		m := &manifest{fileRecord: fileRecord{FileID: newID(), Filename: tt.name, Layout: tt.layout, SHA256: strings.Repeat("0", 64)}, Owner: tt.owner, WriteID: newID()}
		raw := m.marshal()
		if got := inlineManifest([]byte(raw)); got != tt.inline {
			t.Errorf("layout %s, name %q: inline %v, want %v (%s)", tt.layout, tt.name, got, tt.inline, raw)
		}
		back, err := unmarshalManifest([]byte(raw))
		if err != nil || back.inline() != tt.inline || back.Filename != tt.name {
			t.Errorf("decoded back: %+v, %v", back, err)
		}
	}
}
