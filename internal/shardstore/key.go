package shardstore

import (
	"errors"
	"fmt"
	"hash/fnv"
	"path/filepath"
	"strconv"
	"strings"

	"github.com/hivemind/taskworker/internal/names"
)

// Limits on a Key's fields. IDs are short names from a safe alphabet so that no ID can name a path outside
// the store: no separators, no dots, nothing the filesystem treats specially.
const (
	MaxIDLen = 128
	MaxShard = 255 // erasure.MaxShards - 1
)

// ErrInvalidKey is returned (wrapped) for a Key that may not name a shard.
var ErrInvalidKey = errors.New("shardstore: invalid key")

// Key names one shard.
type Key struct {
	FileID  string // the file's ID: 1 to 128 of [A-Za-z0-9_-]
	WriteID string // the write (Push or Revise) that made the shard, same alphabet; concurrent writers of
	// one file use distinct write IDs, so a losing writer can never overwrite the winner's shards
	Block int64 // block number, >= 0
	Shard int   // shard number in the block, 0..255
}

// String returns "fileID/writeID/block.shard".
func (k Key) String() string {
	return k.FileID + "/" + k.WriteID + "/" + strconv.FormatInt(k.Block, 10) + "." + strconv.Itoa(k.Shard)
}

// Validate reports whether k can name a shard; the error says which field is wrong and what is allowed.
func (k Key) Validate() error {
	if err := validateID("file ID", k.FileID); err != nil {
		return err
	}
	if err := validateID("write ID", k.WriteID); err != nil {
		return err
	}
	if k.Block < 0 {
		return fmt.Errorf("%w: block %d is negative", ErrInvalidKey, k.Block)
	}
	if k.Shard < 0 || k.Shard > MaxShard {
		return fmt.Errorf("%w: shard %d is outside [0, %d]", ErrInvalidKey, k.Shard, MaxShard)
	}
	return nil
}

func validateID(what, id string) error {
	if len(id) == 0 || len(id) > MaxIDLen {
		return fmt.Errorf("%w: %s %q must be 1 to %d characters long", ErrInvalidKey, what, names.Truncate(id, 40), MaxIDLen)
	}
	for i := 0; i < len(id); i++ {
		if !idByte(id[i]) {
			return fmt.Errorf("%w: %s %q has %q at byte %d; only A-Z a-z 0-9 _ - are allowed",
				ErrInvalidKey, what, names.Truncate(id, 40), id[i], i)
		}
	}
	return nil
}

func idByte(c byte) bool {
	return 'a' <= c && c <= 'z' || 'A' <= c && c <= 'Z' || '0' <= c && c <= '9' || c == '_' || c == '-'
}

// Layout on disk: DIR/shards/FAN/FILEID/WRITEID/BLOCK.SHARD, where FAN is two hex digits hashed from the
// file ID so that no directory grows to millions of entries. Temp files live beside the shard they will
// become (the rename must stay in one directory) and start with tempPrefix, which no valid name can.
const (
	shardsDir  = "shards"
	tempPrefix = ".tmp-"
)

func fan(fileID string) string {
	h := fnv.New32a()
	h.Write([]byte(fileID))
	return fmt.Sprintf("%02x", h.Sum32()&0xff)
}

// dir returns the directory of k's shard file relative to the store's shards directory.
func (k Key) dir() string { return filepath.Join(fan(k.FileID), k.FileID, k.WriteID) }

func (k Key) fileName() string {
	return strconv.FormatInt(k.Block, 10) + "." + strconv.Itoa(k.Shard)
}

// parseFileName parses a shard file's name, BLOCK.SHARD in canonical decimal.
func parseFileName(name string) (block int64, shard int, ok bool) {
	bs, ss, found := strings.Cut(name, ".")
	if !found {
		return 0, 0, false
	}
	b, okB := parseDecimal(bs, 19)
	s, okS := parseDecimal(ss, 3)
	if !okB || !okS || s > MaxShard {
		return 0, 0, false
	}
	return b, int(s), true
}

// parseDecimal accepts what strconv.FormatInt prints for a non-negative number of at most maxDigits digits.
func parseDecimal(s string, maxDigits int) (int64, bool) {
	if len(s) == 0 || len(s) > maxDigits || (len(s) > 1 && s[0] == '0') {
		return 0, false
	}
	for i := 0; i < len(s); i++ {
		if s[i] < '0' || s[i] > '9' {
			return 0, false
		}
	}
	n, err := strconv.ParseInt(s, 10, 64)
	return n, err == nil
}
