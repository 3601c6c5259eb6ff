package files

import (
	"bytes"
	"encoding/json"
	"testing"
)

// checkManifestJSON fails unless the hand encoders make exactly the bytes
// encoding/json makes of m and of its record.
func checkManifestJSON(t *testing.T, m *manifest) {
	t.Helper()
	want, err := json.Marshal(m)
	if err != nil {
		t.Fatal(err)
	}
	if got := encodeManifest(m); !bytes.Equal(got, want) {
		t.Errorf("manifest:\n got %s\nwant %s", got, want)
	}
	want, err = json.Marshal(m.fileRecord)
	if err != nil {
		t.Fatal(err)
	}
	if got := encodeRecord(&m.fileRecord); !bytes.Equal(got, want) {
		t.Errorf("record:\n got %s\nwant %s", got, want)
	}
}

func TestManifestJSON(t *testing.T) {
	sharded := func() *manifest {
		return &manifest{
			fileRecord: fileRecord{FileID: newID(), Filename: "report.pdf", Version: 7, Size: 1 << 40, SHA256: "ab12",
				Layout: "4+2", BlockSize: 8 << 20, CreatedMs: 1764633600000, ModifiedMs: 1764633600001, KeepVersions: 3},
			Owner: "alice", WriteID: newID(), Key: "a2V5+/=", Sums: "c3Vtcw==",
			Workers: []string{"worker_001", "w2"}, Placement: [][]int16{{0, 1, -1, 499}, nil, {}},
		}
	}
	segmented := sharded()
	segmented.Segments, segmented.SegmentBlocks = 3, 1024
	tests := []struct {
		name string
		m    *manifest
	}{
		{"zero", &manifest{}},
		{"inline", &manifest{fileRecord: fileRecord{FileID: newID(), Filename: "small", Version: 1, Size: 1024, SHA256: "00ff",
			Layout: inlineLayout, BlockSize: 8 << 20, CreatedMs: 1, ModifiedMs: 2}, Owner: "bob", WriteID: newID(), Key: "k", Inline: "aW5saW5l"}},
		{"sharded", sharded()},
		{"segmented", segmented},
		{"negative numbers", &manifest{fileRecord: fileRecord{Version: -1, Size: -2, BlockSize: -3, CreatedMs: -4, ModifiedMs: -5, KeepVersions: -6}, Segments: -7, SegmentBlocks: -8}},
		{"empty workers and placement", &manifest{Workers: []string{}, Placement: [][]int16{}}},
	}
	for _, name := range []string{`"layout":"inline"`, `a\b`, "tab\there", "nl\n", "<script>&amp;", "naïve ☃", "\u2028\u2029", "bad \xff utf-8", "\x00\x1f\x7f", "~ !#$%'()*+,-./:;=?@[]^_`{|}"} {
		m := sharded()
		m.Filename, m.Owner = name, name
		m.Workers = []string{name}
		tests = append(tests, struct {
			name string
			m    *manifest
		}{"name " + name, m})
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) { checkManifestJSON(t, tt.m) })
	}
}

func FuzzManifestJSON(f *testing.F) {
	f.Add("report.pdf", "alice", "4+2", "a2V5", int64(3), int16(-1))
	f.Add("\xff<>&\"\\\u2028", "\x00", inlineLayout, "", int64(0), int16(499))
	f.Fuzz(func(t *testing.T, name, owner, layout, inline string, n int64, w int16) {
		checkManifestJSON(t, &manifest{
			fileRecord: fileRecord{FileID: name, Filename: name, Version: n, Size: -n, SHA256: owner, Layout: layout, KeepVersions: n},
			Owner:      owner, WriteID: layout, Key: inline, Sums: name, Workers: []string{owner, name}, Placement: [][]int16{{w, -w}},
			Inline: inline, Segments: int(n), SegmentBlocks: int(w),
		})
	})
}
