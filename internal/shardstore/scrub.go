package shardstore

import (
	"context"
	"errors"
	"io/fs"
	"iter"
	"os"
	"time"
)

// ProblemKind says what the scrubber found wrong with a shard.
type ProblemKind int

const (
	// Corrupt: the shard file failed verification or could not be read.
	Corrupt ProblemKind = iota + 1
	// Missing: the shard was expected (ScrubHooks.Expected) but is not in the store.
	Missing
)

func (k ProblemKind) String() string {
	switch k {
	case Corrupt:
		return "corrupt"
	case Missing:
		return "missing"
	}
	return "unknown"
}

// Problem is a shard the scrubber found wrong.
type Problem struct {
	Key  Key
	Kind ProblemKind
	Err  error // for Corrupt: a *CorruptError, or the I/O error that made the file unreadable
}

// ScrubHooks connects a scrub to its caller.
type ScrubHooks struct {
	// OnProblem is called for every corrupt or missing shard, from the scrubbing goroutine. Required.
	OnProblem func(Problem)
	// Expected, if not nil, yields the shards this store should hold (the pool knows, the store does not);
	// each one absent is reported Missing. It is iterated once per pass.
	Expected iter.Seq[Key]
	// OnPass, if not nil, is called by RunScrubber after every pass.
	OnPass func(ScrubStats, error)
}

// ScrubStats summarises one scrub pass.
type ScrubStats struct {
	Shards  int   // shards verified
	Bytes   int64 // payload bytes read
	Corrupt int
	Missing int
	Elapsed time.Duration
}

// Scrub makes one pass: it reads every shard through at no more than Config.ScrubRate and verifies it, then
// checks that every expected shard exists. A shard deleted during the pass is not a problem.
func (s *Store) Scrub(ctx context.Context, hooks ScrubHooks) (ScrubStats, error) {
	if hooks.OnProblem == nil {
		return ScrubStats{}, errors.New("shardstore: ScrubHooks.OnProblem is nil; the scrubber needs somewhere to report")
	}
	if err := s.begin(); err != nil {
		return ScrubStats{}, err
	}
	defer s.ops.Done()
	// Close must not wait for a paced read of a large shard: closing the Store cancels the pass.
	ctx, cancel := context.WithCancel(ctx)
	defer cancel()
	defer context.AfterFunc(s.life, cancel)()
	start := time.Now()
	var st ScrubStats
	pace := newPacer(s.cfg.ScrubRate)
	report := func(p Problem) {
		if p.Kind == Corrupt {
			st.Corrupt++
		} else {
			st.Missing++
		}
		hooks.OnProblem(p)
	}
	err := s.walk(ctx, "", func(e entry) error {
		if e.temp {
			return nil
		}
		info, err := s.verifyPaced(ctx, e, pace)
		switch {
		case err == nil:
			st.Shards++
			st.Bytes += info.Size
		case errors.Is(err, fs.ErrNotExist), ctx.Err() != nil:
		default:
			report(Problem{Key: e.key, Kind: Corrupt, Err: err})
		}
		return ctx.Err()
	}, nil)
	if err == nil && hooks.Expected != nil {
		for k := range hooks.Expected {
			if err = ctx.Err(); err != nil {
				break
			}
			if k.Validate() != nil {
				continue
			}
			if _, serr := os.Lstat(s.path(k)); errors.Is(serr, fs.ErrNotExist) {
				report(Problem{Key: k, Kind: Missing, Err: ErrNotFound})
			}
		}
	}
	st.Elapsed = time.Since(start)
	if err != nil && s.life.Err() != nil {
		err = ErrClosed
	}
	return st, err
}

func (s *Store) verifyPaced(ctx context.Context, e entry, pace *pacer) (Info, error) {
	f, err := os.Open(e.path)
	if err != nil {
		return Info{}, err
	}
	defer f.Close()
	info, _, err := readShard(ctx, f, e.path, e.key, readVerify, pace)
	return info, err
}

// RunScrubber scrubs the store every Config.ScrubInterval, the first pass at once, until ctx is done
// (then it returns nil) or the Store is closed (ErrClosed). A failed pass is logged and retried at the
// next interval. The caller owns the goroutine it runs on.
func (s *Store) RunScrubber(ctx context.Context, hooks ScrubHooks) error {
	t := time.NewTimer(0)
	defer t.Stop()
	for {
		select {
		case <-ctx.Done():
			return nil
		case <-t.C:
		}
		st, err := s.Scrub(ctx, hooks)
		if errors.Is(err, ErrClosed) {
			return err
		}
		if ctx.Err() != nil {
			return nil
		}
		if err != nil {
			s.logger.Warn("shardstore: scrub pass failed", "dir", s.cfg.Dir, "err", err)
		}
		if hooks.OnPass != nil {
			hooks.OnPass(st, err)
		}
		t.Reset(s.cfg.ScrubInterval)
	}
}

// pacer spreads reads so that they average at most rate bytes per second.
type pacer struct {
	rate  int64
	start time.Time
	done  int64
}

func newPacer(rate int64) *pacer { return &pacer{rate: rate, start: time.Now()} }

// chunk is the read size: a tenth of a second's worth, at most 1 MiB, so sleeps stay short and even.
func (p *pacer) chunk() int { return int(min(max(p.rate/10, 4<<10), 1<<20)) }

// wait records n bytes read and sleeps until the average rate is back under the limit.
func (p *pacer) wait(ctx context.Context, n int) error {
	p.done += int64(n)
	due := p.start.Add(time.Duration(float64(p.done) / float64(p.rate) * float64(time.Second)))
	d := time.Until(due)
	if d <= 0 {
		return nil
	}
	t := time.NewTimer(d)
	defer t.Stop()
	select {
	case <-ctx.Done():
		return ctx.Err()
	case <-t.C:
		return nil
	}
}
