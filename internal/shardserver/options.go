package shardserver

import (
	"errors"
	"fmt"
	"log/slog"

	"github.com/hivemind/taskworker/internal/shardstore"
)

// Options configures a Server. The zero value of a field means its default; see DefaultOptions.
type Options struct {
	// Logger receives what the server noticed on its own: corrupt shards served, failed writes. Nil
	// discards.
	Logger *slog.Logger
	// MaxShardSize bounds the payload of one PutShard, checked as the bytes arrive, so that a runaway or
	// hostile caller cannot fill the disk with one stream. The store's own Config.MaxShardSize applies
	// too; keep this at most that, or oversize puts fail later (still ResourceExhausted).
	MaxShardSize int64
	// MaxDeleteKeys bounds the keys plus writes of one DeleteShards request, so that one request's
	// work stays bounded; the pool splits larger deletions.
	MaxDeleteKeys int
}

// Defaults.
const (
	DefaultMaxShardSize  = shardstore.DefaultMaxShardSize // 256 MiB, the largest erasure block
	DefaultMaxDeleteKeys = 10_000
)

// DefaultOptions returns the defaults: no logging, DefaultMaxShardSize, DefaultMaxDeleteKeys.
func DefaultOptions() Options {
	return Options{MaxShardSize: DefaultMaxShardSize, MaxDeleteKeys: DefaultMaxDeleteKeys}
}

// withDefaults returns o with each zero field set to its default.
func (o Options) withDefaults() Options {
	d := DefaultOptions()
	if o.Logger == nil {
		o.Logger = slog.New(slog.DiscardHandler)
	}
	if o.MaxShardSize == 0 {
		o.MaxShardSize = d.MaxShardSize
	}
	if o.MaxDeleteKeys == 0 {
		o.MaxDeleteKeys = d.MaxDeleteKeys
	}
	return o
}

// Validate reports every setting that cannot work, each with what to change. Zero fields are valid (they
// mean the default).
func (o Options) Validate() error {
	var errs []error
	if o.MaxShardSize < 0 {
		errs = append(errs, fmt.Errorf("shardserver: MaxShardSize (%d) is negative; set it to the largest shard the worker accepts, or 0 for the default (%d bytes)",
			o.MaxShardSize, DefaultMaxShardSize))
	}
	if o.MaxDeleteKeys < 0 {
		errs = append(errs, fmt.Errorf("shardserver: MaxDeleteKeys (%d) is negative; set it to the most keys one DeleteShards may name, or 0 for the default (%d)",
			o.MaxDeleteKeys, DefaultMaxDeleteKeys))
	}
	return errors.Join(errs...)
}
