package erasure

import (
	"errors"
	"fmt"
	"strconv"
	"strings"
)

// MaxShards is the most shards (data plus parity) a block can have: Reed-Solomon over GF(2^8) has 256
// distinct evaluation points.
const MaxShards = 256

// Layout is the shape of one coded block: Data shards carry the block's bytes, Parity shards are computed
// from them, and any Data of the Data+Parity shards rebuild the block. A Layout prints as "4+2".
type Layout struct {
	Data   int // k: shards that carry the block's bytes
	Parity int // m: shards that may be lost without losing the block
}

// DefaultLayout is 4+2: two lost workers tolerated for 1.5x the stored bytes.
var DefaultLayout = Layout{Data: 4, Parity: 2}

// ErrLayout is returned (wrapped) for a layout that cannot be used.
var ErrLayout = errors.New("erasure: invalid layout")

// LayoutFor returns the strongest layout that puts every shard of a block on a distinct worker when
// workers are available:
//
//	workers  layout  tolerates  stored bytes
//	6+       4+2     2 lost     1.5x
//	5        3+2     2 lost     1.67x
//	4        2+2     2 lost     2x
//	3        2+1     1 lost     1.5x
//	2        1+1     1 lost     2x (two copies)
//	1        1+0     nothing    1x
//
// Two lost workers are tolerated while that costs no more than two plain copies would; below four workers
// one loss is tolerated (two copies' worth of safety); a single worker can hold only one copy, and the
// returned layout says so (Tolerates() == 0). See docs/RATIONALE.md ("Why this layout table?").
func LayoutFor(workers int) (Layout, error) {
	switch {
	case workers >= 6:
		return DefaultLayout, nil
	case workers == 5:
		return Layout{Data: 3, Parity: 2}, nil
	case workers == 4:
		return Layout{Data: 2, Parity: 2}, nil
	case workers == 3:
		return Layout{Data: 2, Parity: 1}, nil
	case workers == 2:
		return Layout{Data: 1, Parity: 1}, nil
	case workers == 1:
		return Layout{Data: 1, Parity: 0}, nil
	}
	return Layout{}, fmt.Errorf("%w: no workers available (%d): start at least one worker", ErrLayout, workers)
}

// ParseLayout parses the form String prints, "k+m", e.g. "4+2".
func ParseLayout(s string) (Layout, error) {
	ks, ms, ok := strings.Cut(s, "+")
	if !ok {
		return Layout{}, fmt.Errorf("%w: %q is not of the form DATA+PARITY, e.g. 4+2", ErrLayout, s)
	}
	k, errK := parseCount(ks)
	m, errM := parseCount(ms)
	if errK != nil || errM != nil {
		return Layout{}, fmt.Errorf("%w: %q is not of the form DATA+PARITY with decimal counts, e.g. 4+2", ErrLayout, s)
	}
	l := Layout{Data: k, Parity: m}
	if err := l.Validate(); err != nil {
		return Layout{}, err
	}
	return l, nil
}

// parseCount accepts the decimal form String prints: digits only, at most three, no leading zero.
func parseCount(s string) (int, error) {
	if len(s) == 0 || len(s) > 3 || (len(s) > 1 && s[0] == '0') {
		return 0, strconv.ErrSyntax
	}
	for _, c := range s {
		if c < '0' || c > '9' {
			return 0, strconv.ErrSyntax
		}
	}
	return strconv.Atoi(s)
}

// String returns "k+m".
func (l Layout) String() string { return strconv.Itoa(l.Data) + "+" + strconv.Itoa(l.Parity) }

// Shards returns k+m, the number of shards (and distinct workers) per block.
func (l Layout) Shards() int { return l.Data + l.Parity }

// Tolerates returns how many shards of a block may be lost or corrupt with the block still readable.
func (l Layout) Tolerates() int { return l.Parity }

// Overhead returns stored bytes per data byte, (k+m)/k.
func (l Layout) Overhead() float64 { return float64(l.Shards()) / float64(l.Data) }

// Validate reports whether the layout can be coded.
func (l Layout) Validate() error {
	switch {
	case l.Data < 1:
		return fmt.Errorf("%w: %s has %d data shards; it needs at least 1", ErrLayout, l, l.Data)
	case l.Parity < 0:
		return fmt.Errorf("%w: %s has a negative parity count", ErrLayout, l)
	case l.Data+l.Parity > MaxShards:
		return fmt.Errorf("%w: %s has %d shards; at most %d are possible", ErrLayout, l, l.Shards(), MaxShards)
	}
	return nil
}
