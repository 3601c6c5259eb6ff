package files

import (
	"bytes"
	"crypto/rand"
	"encoding/base32"
	"encoding/base64"
	"encoding/hex"
	"encoding/json"
	"fmt"
	"slices"
	"strings"

	v1 "github.com/hivemind/taskworker/api/taskworker/v1"
	"github.com/hivemind/taskworker/internal/erasure"
	"github.com/hivemind/taskworker/internal/keyring"
	"github.com/hivemind/taskworker/internal/names"
)

// fileRecord is the small record under files/<user>/<id>: the file's
// current version. Every change to a file rewrites it, which is what
// Synchronous reports.
type fileRecord struct {
	FileID     string `json:"id"`
	Filename   string `json:"name"`
	Version    int64  `json:"version"`
	Size       int64  `json:"size"`
	SHA256     string `json:"sha256"`
	Layout     string `json:"layout"`
	BlockSize  int    `json:"block_size"`
	CreatedMs  int64  `json:"created_ms"`
	ModifiedMs int64  `json:"modified_ms"`
	// KeepVersions is the file's own retention (0: its owner's).
	KeepVersions int64 `json:"keep_versions,omitempty"`
}

// manifest is one version of a file: everything needed to read it back.
type manifest struct {
	fileRecord
	Owner string `json:"owner"`
	// WriteID names the shards of this version on the workers.
	WriteID string `json:"write_id"`
	// Key is the write's data key, wrapped by a master key and bound to
	// the file and the write (see seal.go). Empty: a version written
	// before blocks were sealed, stored as plaintext.
	Key string `json:"key,omitempty"`
	// Sums holds every shard's BLAKE3 checksum, block by block, base64.
	Sums string `json:"sums"`
	// Workers and Placement record where shards are: Placement[b][i] is
	// the index in Workers of the worker holding shard i of block b, or -1.
	Workers   []string  `json:"workers"`
	Placement [][]int16 `json:"placement"`
	// Inline holds a small file's bytes (base64) in the manifest itself,
	// with no shards: see inlineLayout.
	Inline string `json:"inline,omitempty"`
	// Segments counts the segments that hold Sums, Workers and Placement
	// of a version with more blocks than one etcd value holds, each of
	// SegmentBlocks blocks but the last; 0: they are in the manifest
	// itself. See segment.
	Segments      int `json:"segments,omitempty"`
	SegmentBlocks int `json:"segment_blocks,omitempty"`
	// segRevs are the segments' etcd mod revisions as read, for repair's
	// compare-and-swap.
	segRevs []int64
	// sums caches Sums decoded (see sumBytes).
	sums struct {
		of  string
		raw []byte
	}
}

// sumBytes returns Sums decoded, decoding it once for every segment and
// window that needs it.
func (m *manifest) sumBytes() ([]byte, error) {
	if m.sums.raw == nil || m.sums.of != m.Sums {
		raw, err := base64.StdEncoding.DecodeString(m.Sums)
		if err != nil {
			return nil, fmt.Errorf("manifest of %s: bad sums: %w", m.FileID, err)
		}
		m.sums.of, m.sums.raw = m.Sums, raw
	}
	return m.sums.raw, nil
}

// manifestReserve is the part of Config.MaxManifestBytes left for what
// does not grow with the blocks: names, hashes, and the list of workers
// (some 500 of the longest ids).
const manifestReserve = 64 << 10

// maxBlocks is the most blocks a manifest of layout l holds within max
// bytes: per block, its shards' checksums (32 bytes each, in base64) and
// its placement (a JSON array of worker indexes, at most 4 bytes each).
func maxBlocks(l erasure.Layout, max int) int64 {
	n := l.Shards()
	perBlock := (32*n+2)/3*4 + 4*n + 3
	return int64((max - manifestReserve) / perBlock)
}

// inlineLayout names the layout of files kept in etcd, not on workers.
const inlineLayout = "inline"

func (m *manifest) inline() bool { return m.Layout == inlineLayout }

func (m *manifest) layout() (erasure.Layout, error) { return erasure.ParseLayout(m.Layout) }

// sealed reports whether m's blocks (or inline bytes) are ciphertext.
func (m *manifest) sealed() bool { return m.Key != "" }

// fileInfo is the manifest in the erasure package's terms: for a sealed
// version, the geometry of the sealed stream the shards code, with no
// SHA-256 (the manifest's is the plaintext's: sealedReader checks it, and
// the Decoder's Copy, which would check the stream's, is not used).
func (m *manifest) fileInfo() (*erasure.FileInfo, error) {
	l, err := m.layout()
	if err != nil {
		return nil, err
	}
	info := &erasure.FileInfo{Layout: l, BlockSize: m.BlockSize, Size: m.Size}
	sha, err := hex.DecodeString(m.SHA256)
	if err != nil || len(sha) != 32 {
		return nil, fmt.Errorf("manifest of %s: bad SHA-256 %q", m.FileID, m.SHA256)
	}
	if m.sealed() {
		if m.BlockSize < 1 || m.Size < 0 || m.Size > erasure.MaxFileSize {
			return nil, fmt.Errorf("manifest of %s: %d bytes in blocks of %d", m.FileID, m.Size, m.BlockSize)
		}
		info.BlockSize, info.Size = m.BlockSize+keyring.Overhead, sealedSize(m.Size, m.BlockSize)
	} else {
		copy(info.SHA256[:], sha)
	}
	raw, err := m.sumBytes()
	if err != nil {
		return nil, err
	}
	n := l.Shards()
	blocks := info.Blocks()
	if int64(len(raw)) != blocks*int64(n)*32 {
		return nil, fmt.Errorf("manifest of %s: %d bytes of sums for %d blocks of %d shards", m.FileID, len(raw), blocks, n)
	}
	info.Sums = make([][]erasure.Sum, blocks)
	for b := range info.Sums {
		info.Sums[b] = make([]erasure.Sum, n)
		for i := range n {
			copy(info.Sums[b][i][:], raw[(b*n+i)*32:])
		}
	}
	return info, info.Validate()
}

func encodeSums(sums [][]erasure.Sum) string {
	var raw []byte
	for _, block := range sums {
		for _, s := range block {
			raw = append(raw, s[:]...)
		}
	}
	return base64.StdEncoding.EncodeToString(raw)
}

// holder returns the worker holding shard i of block b, or "".
func (m *manifest) holder(b int64, i int) string {
	if b >= int64(len(m.Placement)) || i >= len(m.Placement[b]) || m.Placement[b][i] < 0 {
		return ""
	}
	return m.Workers[m.Placement[b][i]]
}

// holders returns the workers of block b's shards, "" where none.
func (m *manifest) holders(b int64) []string {
	out := make([]string, len(m.Placement[b]))
	for i := range out {
		out[i] = m.holder(b, i)
	}
	return out
}

// clonePlacement returns a copy of m whose Workers and Placement are its
// own, so that m's can change while the copy is read.
func (m *manifest) clonePlacement() *manifest {
	c := *m
	c.Workers = slices.Clone(m.Workers)
	c.Placement = make([][]int16, len(m.Placement))
	for b, row := range m.Placement {
		c.Placement[b] = slices.Clone(row)
	}
	return &c
}

// setHolder records that worker id holds shard i of block b ("" for none).
func (m *manifest) setHolder(b int64, i int, id string) {
	if id == "" {
		m.Placement[b][i] = -1
		return
	}
	for j, w := range m.Workers {
		if w == id {
			m.Placement[b][i] = int16(j)
			return
		}
	}
	m.Workers = append(m.Workers, id)
	m.Placement[b][i] = int16(len(m.Workers) - 1)
}

// marshal encodes the manifest's etcd value: without its blocks when they
// are in segments.
func (m *manifest) marshal() string {
	v := m
	if m.segmented() {
		head := *m
		head.Sums, head.Workers, head.Placement = "", nil, nil
		v = &head
	}
	return string(encodeManifest(v))
}

// inlineField is how an inline manifest's layout appears in its JSON. Its
// quotes are bare, so no string value (a filename, say) can hold it: JSON
// escapes a quote inside a string.
var inlineField = []byte(`"layout":"` + inlineLayout + `"`)

// inlineManifest reports whether the JSON of a manifest is an inline
// file's, without decoding it.
func inlineManifest(b []byte) bool { return bytes.Contains(b, inlineField) }

func unmarshalManifest(b []byte) (*manifest, error) {
	m := &manifest{}
	if err := json.Unmarshal(b, m); err != nil {
		return nil, err
	}
	return m, nil
}

func (r fileRecord) proto() *v1.FileInfo {
	return &v1.FileInfo{
		FileId:       r.FileID,
		Filename:     r.Filename,
		Version:      r.Version,
		Size:         r.Size,
		Sha256:       r.SHA256,
		CreatedAtMs:  r.CreatedMs,
		ModifiedAtMs: r.ModifiedMs,
		Layout:       r.Layout,
		BlockSize:    int64(r.BlockSize),
	}
}

// keys lays out the package's etcd keys under a prefix.
type keys struct{ prefix string }

func (k keys) userFiles(user string) string { return k.prefix + "files/" + user + "/" }
func (k keys) file(user, id string) string  { return k.userFiles(user) + id }
func (k keys) manifests(id string) string   { return k.prefix + "manifests/" + id + "/" }
func (k keys) allManifests() string         { return k.prefix + "manifests/" }
func (k keys) manifest(id string, v int64) string {
	return fmt.Sprintf("%s%020d", k.manifests(id), v)
}
func (k keys) allDamage() string { return k.prefix + "damage/" }

// usage holds the bytes of a user's stored versions (see retention.go).
func (k keys) usage(user string) string { return k.prefix + "usage/storage/" + user }

// usageChanged marks changes to a user's files while their use is not
// counted (see usage).
func (k keys) usageChanged(user string) string { return k.prefix + "usage/changed/" + user }

// fileSegments holds the segments of a file's versions (see segment):
// segments/<file>/<write>/<n>. It is apart from manifests/<file>/, which
// lists the file's versions.
func (k keys) allSegments() string           { return k.prefix + "segments/" }
func (k keys) fileSegments(id string) string { return k.allSegments() + id + "/" }
func (k keys) writeSegments(id, write string) string {
	return k.fileSegments(id) + write + "/"
}
func (k keys) segment(id, write string, n int) string {
	return fmt.Sprintf("%s%08d", k.writeSegments(id, write), n)
}

// allWrites holds the intent records of writes in progress or failed:
// writes/<file>/<write>, valued with the unix ms the write started or
// last refreshed it (see tendIntent).
func (k keys) allWrites() string               { return k.prefix + "writes/" }
func (k keys) write(file, write string) string { return k.allWrites() + file + "/" + write }
func (k keys) inventoryChecked() string        { return k.prefix + "inventory/checked" }

// parseWrite reads an intent key back.
func (k keys) parseWrite(key string) (file, write string, ok bool) {
	file, write, ok = strings.Cut(strings.TrimPrefix(key, k.allWrites()), "/")
	return file, write, ok && names.FileID(file) == nil && names.FileID(write) == nil
}
func (k keys) damage(id, write string, block int64, shard int) string {
	return fmt.Sprintf("%s%s/%s/%d/%d", k.allDamage(), id, write, block, shard)
}

// parseDamage reads a damage key back.
func (k keys) parseDamage(key string) (id, write string, block int64, shard int, ok bool) {
	parts := strings.Split(strings.TrimPrefix(key, k.allDamage()), "/")
	if len(parts) != 4 {
		return "", "", 0, 0, false
	}
	if _, err := fmt.Sscan(parts[2], &block); err != nil {
		return "", "", 0, 0, false
	}
	if _, err := fmt.Sscan(parts[3], &shard); err != nil {
		return "", "", 0, 0, false
	}
	return parts[0], parts[1], block, shard, true
}

var idEncoding = base32.StdEncoding.WithPadding(base32.NoPadding)

// newID returns a random id: 26 characters, 128 bits.
func newID() string {
	b := make([]byte, 16)
	_, _ = rand.Read(b)
	return strings.ToLower(idEncoding.EncodeToString(b))
}
