package files

import (
	"strconv"

	"github.com/hivemind/taskworker/internal/jsonenc"
)

// The manifest and the file record are encoded by hand, to the bytes
// encoding/json makes of them (TestManifestJSON holds the two together;
// they are decoded with encoding/json): a small push spent a twentieth of
// the pool's CPU in encoding/json's reflection and string escaping
// (RATIONALE.md, "Why are manifests encoded by hand?").

// appendRecordFields appends r's fields, without braces.
func appendRecordFields(b []byte, r *fileRecord) []byte {
	b = append(b, `"id":`...)
	b = jsonenc.AppendString(b, r.FileID)
	b = append(b, `,"name":`...)
	b = jsonenc.AppendString(b, r.Filename)
	b = append(b, `,"version":`...)
	b = strconv.AppendInt(b, r.Version, 10)
	b = append(b, `,"size":`...)
	b = strconv.AppendInt(b, r.Size, 10)
	b = append(b, `,"sha256":`...)
	b = jsonenc.AppendString(b, r.SHA256)
	b = append(b, `,"layout":`...)
	b = jsonenc.AppendString(b, r.Layout)
	b = append(b, `,"block_size":`...)
	b = strconv.AppendInt(b, int64(r.BlockSize), 10)
	b = append(b, `,"created_ms":`...)
	b = strconv.AppendInt(b, r.CreatedMs, 10)
	b = append(b, `,"modified_ms":`...)
	b = strconv.AppendInt(b, r.ModifiedMs, 10)
	if r.KeepVersions != 0 {
		b = append(b, `,"keep_versions":`...)
		b = strconv.AppendInt(b, r.KeepVersions, 10)
	}
	return b
}

// encodeRecord is json.Marshal(r).
func encodeRecord(r *fileRecord) []byte {
	b := make([]byte, 0, 256+len(r.Filename))
	b = append(b, '{')
	b = appendRecordFields(b, r)
	return append(b, '}')
}

// encodeManifest is json.Marshal(m).
func encodeManifest(m *manifest) []byte {
	b := make([]byte, 0, 512+len(m.Filename)+len(m.Key)+len(m.Sums)+len(m.Inline)+40*len(m.Workers)+16*len(m.Placement))
	b = append(b, '{')
	b = appendRecordFields(b, &m.fileRecord)
	b = append(b, `,"owner":`...)
	b = jsonenc.AppendString(b, m.Owner)
	b = append(b, `,"write_id":`...)
	b = jsonenc.AppendString(b, m.WriteID)
	if m.Key != "" {
		b = append(b, `,"key":`...)
		b = jsonenc.AppendString(b, m.Key)
	}
	b = append(b, `,"sums":`...)
	b = jsonenc.AppendString(b, m.Sums)
	b = append(b, `,"workers":`...)
	b = jsonenc.AppendStrings(b, m.Workers)
	b = append(b, `,"placement":`...)
	if m.Placement == nil {
		b = append(b, "null"...)
	} else {
		b = append(b, '[')
		for i, block := range m.Placement {
			if i > 0 {
				b = append(b, ',')
			}
			if block == nil {
				b = append(b, "null"...)
				continue
			}
			b = append(b, '[')
			for j, w := range block {
				if j > 0 {
					b = append(b, ',')
				}
				b = strconv.AppendInt(b, int64(w), 10)
			}
			b = append(b, ']')
		}
		b = append(b, ']')
	}
	if m.Inline != "" {
		b = append(b, `,"inline":`...)
		b = jsonenc.AppendString(b, m.Inline)
	}
	if m.Segments != 0 {
		b = append(b, `,"segments":`...)
		b = strconv.AppendInt(b, int64(m.Segments), 10)
	}
	if m.SegmentBlocks != 0 {
		b = append(b, `,"segment_blocks":`...)
		b = strconv.AppendInt(b, int64(m.SegmentBlocks), 10)
	}
	return append(b, '}')
}
