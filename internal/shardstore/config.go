package shardstore

import (
	"errors"
	"fmt"
	"log/slog"
	"time"
)

// Config configures a Store. Start from DefaultConfig.
type Config struct {
	// Dir is the directory that holds the store; it is created if missing. One process at a time may open
	// it (Open takes a lock file).
	Dir string
	// MaxShardSize bounds one shard's payload, so that a runaway writer cannot fill the disk with one
	// Put. The default, 256 MiB, is the largest erasure block (a 1+m layout's shard is a whole block).
	MaxShardSize int64
	// ScrubInterval is the pause between two scrubber passes over every shard.
	ScrubInterval time.Duration
	// ScrubRate bounds the scrubber's reads in bytes per second, so that it never competes with serving.
	ScrubRate int64
	// Logger receives what the store did on its own (temp files collected at Open, scrub pass failures).
	// Nil discards.
	Logger *slog.Logger
}

// Defaults. A 24-hour interval at 64 MiB/s covers 5 TB per day.
const (
	DefaultMaxShardSize  = 256 << 20
	DefaultScrubInterval = 24 * time.Hour
	DefaultScrubRate     = 64 << 20

	maxMaxShardSize  = 4 << 30
	minScrubInterval = time.Second
	minScrubRate     = 64 << 10
)

// DefaultConfig returns the defaults for a store in dir.
func DefaultConfig(dir string) Config {
	return Config{
		Dir:           dir,
		MaxShardSize:  DefaultMaxShardSize,
		ScrubInterval: DefaultScrubInterval,
		ScrubRate:     DefaultScrubRate,
	}
}

// Validate reports every setting that cannot work, each with what to change.
func (c Config) Validate() error {
	var errs []error
	if c.Dir == "" {
		errs = append(errs, errors.New("shardstore: Dir is empty; set it to the directory where this worker keeps its shards"))
	}
	if c.MaxShardSize < 1 || c.MaxShardSize > maxMaxShardSize {
		errs = append(errs, fmt.Errorf("shardstore: MaxShardSize (%d) must be between 1 byte and 4 GiB; the default is %d (256 MiB)",
			c.MaxShardSize, DefaultMaxShardSize))
	}
	if c.ScrubInterval < minScrubInterval {
		errs = append(errs, fmt.Errorf("shardstore: ScrubInterval (%s) is below %s: the scrubber would reread the disk back to back; use hours (the default is %s)",
			c.ScrubInterval, minScrubInterval, DefaultScrubInterval))
	}
	if c.ScrubRate < minScrubRate {
		errs = append(errs, fmt.Errorf("shardstore: ScrubRate (%d bytes/s) is below %d: one pass over 1 TB would take half a year; raise it (the default is %d, 64 MiB/s)",
			c.ScrubRate, minScrubRate, DefaultScrubRate))
	}
	return errors.Join(errs...)
}
