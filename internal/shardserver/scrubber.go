package shardserver

import (
	"context"
	"errors"
	"iter"
	"log/slog"
	"slices"
	"sync"
	"time"

	"github.com/hivemind/taskworker/internal/shardstore"
)

// ReportFunc hands damaged (corrupt or missing) shards to whoever rebuilds them; the worker wires it to
// the pool's RegistryService.ReportDamage, with KeysToProto. It should bound its own call (a timeout):
// the scrub pauses while a report is in flight.
type ReportFunc func(ctx context.Context, keys []shardstore.Key) error

// ScrubberOptions configures RunScrubber. Zero (or negative) fields take their defaults.
type ScrubberOptions struct {
	// Logger receives each damaged shard, pass summaries and failed reports. Nil discards.
	Logger *slog.Logger
	// BatchSize is the most keys per report; a full batch is reported at once. Default 256.
	BatchSize int
	// FlushInterval bounds how long a damaged shard waits before it is reported, and how soon a failed
	// report is retried. Default 10s.
	FlushInterval time.Duration
	// Expected, if not nil, yields the shards the store should hold; each one absent is reported too. See
	// shardstore.ScrubHooks.Expected.
	Expected iter.Seq[shardstore.Key]
}

// Scrubber defaults.
const (
	DefaultScrubBatchSize     = 256
	DefaultScrubFlushInterval = 10 * time.Second

	// pendingBatches bounds the keys kept while reports fail, in batches: beyond it, keys are dropped,
	// and the next pass (which finds them again, as a corrupt shard is never moved) reports them.
	pendingBatches = 64
)

// RunScrubber runs store's scrubber (shardstore.Store.RunScrubber: a pass every Config.ScrubInterval) and
// reports the damaged shards it finds through report, in batches: when BatchSize are pending, at the end
// of each pass, and at least every FlushInterval. A report that fails is logged and retried at the next
// of those. It returns nil when ctx is done (keys not yet reported are dropped; the next run finds them
// again), and shardstore.ErrClosed, after a last attempt to report, if the store is closed during a pass
// or before the next (which may be ScrubInterval away: cancel ctx first). The caller owns the goroutine it
// runs on; RunScrubber's own goroutine ends before it returns.
func RunScrubber(ctx context.Context, store *shardstore.Store, report ReportFunc, opts ScrubberOptions) error {
	if store == nil || report == nil {
		return errors.New("shardserver: RunScrubber needs a store and a report function")
	}
	if opts.Logger == nil {
		opts.Logger = slog.New(slog.DiscardHandler)
	}
	if opts.BatchSize <= 0 {
		opts.BatchSize = DefaultScrubBatchSize
	}
	if opts.FlushInterval <= 0 {
		opts.FlushInterval = DefaultScrubFlushInterval
	}
	log := opts.Logger
	ctx, cancel := context.WithCancel(ctx)
	defer cancel()

	events := make(chan scrubEvent)
	r := &damageReporter{report: report, log: log, batch: opts.BatchSize, queued: map[shardstore.Key]bool{}}
	var wg sync.WaitGroup
	wg.Go(func() { r.run(ctx, events, opts.FlushInterval) })
	send := func(ev scrubEvent) {
		select {
		case events <- ev:
		case <-ctx.Done():
		}
	}
	err := store.RunScrubber(ctx, shardstore.ScrubHooks{
		OnProblem: func(p shardstore.Problem) {
			log.Warn("shardserver: scrubber found a damaged shard", "shard", p.Key.String(), "problem", p.Kind.String(), "err", p.Err)
			send(scrubEvent{key: p.Key})
		},
		Expected: opts.Expected,
		OnPass: func(st shardstore.ScrubStats, err error) {
			level := slog.LevelDebug
			if err != nil || st.Corrupt+st.Missing > 0 {
				level = slog.LevelInfo
			}
			log.Log(ctx, level, "shardserver: scrub pass done", "shards", st.Shards, "bytes", st.Bytes,
				"corrupt", st.Corrupt, "missing", st.Missing, "elapsed", st.Elapsed, "err", err)
			send(scrubEvent{passEnd: true})
		},
	})
	close(events) // the hooks, the only senders, ran on this goroutine and are done
	wg.Wait()
	return err
}

// scrubEvent is a damaged shard's key, or the end of a pass.
type scrubEvent struct {
	key     shardstore.Key
	passEnd bool
}

// damageReporter batches damaged keys and reports them; only its run goroutine touches its fields.
type damageReporter struct {
	report  ReportFunc
	log     *slog.Logger
	batch   int
	pending []shardstore.Key // in the order found, not yet reported
	queued  map[shardstore.Key]bool
	dropped int // keys dropped since the last report went through
}

func (r *damageReporter) run(ctx context.Context, events <-chan scrubEvent, every time.Duration) {
	tick := time.NewTicker(every)
	defer tick.Stop()
	for {
		select {
		case ev, ok := <-events:
			switch {
			case !ok:
				if ctx.Err() == nil {
					r.flush(ctx) // the store closed: one last try
				}
				return
			case ev.passEnd:
				r.flush(ctx)
			default:
				r.add(ev.key)
				if len(r.pending) >= r.batch {
					r.flush(ctx)
				}
			}
		case <-tick.C:
			r.flush(ctx)
		case <-ctx.Done():
			return
		}
	}
}

func (r *damageReporter) add(k shardstore.Key) {
	switch {
	case r.queued[k]:
	case len(r.pending) >= pendingBatches*r.batch:
		r.dropped++
	default:
		r.queued[k] = true
		r.pending = append(r.pending, k)
	}
}

// flush reports the pending keys a batch at a time, stopping at the first failure.
func (r *damageReporter) flush(ctx context.Context) {
	for len(r.pending) > 0 {
		n := min(r.batch, len(r.pending))
		if err := r.report(ctx, slices.Clone(r.pending[:n])); err != nil {
			if ctx.Err() == nil {
				r.log.Warn("shardserver: reporting damaged shards failed; will retry", "shards", len(r.pending), "dropped", r.dropped, "err", err)
			}
			return
		}
		for _, k := range r.pending[:n] {
			delete(r.queued, k)
		}
		r.pending = slices.Delete(r.pending, 0, n)
		if r.dropped > 0 {
			r.log.Warn("shardserver: damaged shards were dropped while reports failed; the next scrub pass reports them", "dropped", r.dropped)
			r.dropped = 0
		}
	}
}
