package worker

import (
	"context"
	"sync"
	"sync/atomic"
	"time"

	"google.golang.org/grpc"

	"github.com/hivemind/taskworker/internal/childproc"
	"github.com/hivemind/taskworker/internal/metrics"
	"github.com/hivemind/taskworker/internal/shardstore"
)

// workerMetrics feeds Config.Metrics: the calls the worker runs, by
// function and code, and their latency, counted as each call ends; the
// calls in flight, the sandbox's child processes and the shards held, read
// when /metrics is scraped. The sandbox's counts are childproc's, which are
// the process's: two workers in one process report the same children.
type workerMetrics struct {
	m *metrics.Metrics

	inflight *atomic.Int64
	store    atomic.Pointer[shardstore.Store]

	mu      sync.Mutex // one scrape's reads at a time
	started map[string]uint64
	ended   map[[2]string]uint64
	usageAt time.Time
}

// usageEvery bounds how often a scrape walks the shard store for its size.
const usageEvery = 5 * time.Second

func newWorkerMetrics(m *metrics.Metrics, inflight *atomic.Int64) *workerMetrics {
	if m == nil {
		return nil
	}
	w := &workerMetrics{m: m, inflight: inflight, started: map[string]uint64{}, ended: map[[2]string]uint64{}}
	m.OnScrape(w.refresh)
	return w
}

// observe counts a call of function that began at start and ended in err.
func (w *workerMetrics) observe(function string, start time.Time, err error) {
	w.m.ObserveCall(function, err, time.Since(start))
}

// refresh reads what is costly or impossible to count as it happens.
func (w *workerMetrics) refresh() {
	w.mu.Lock()
	defer w.mu.Unlock()
	w.m.CallsInFlight.Set(float64(w.inflight.Load()))
	// The counters move by what childproc counted since the last scrape;
	// every reason's series is there from a class's first start, at zero.
	for class, c := range childproc.Classes() {
		w.m.SandboxProcesses.WithLabelValues(class).Set(float64(c.Alive))
		w.m.SandboxStarts.WithLabelValues(class).Add(float64(c.Started - w.started[class]))
		w.started[class] = c.Started
		for reason, n := range c.Ended {
			k := [2]string{class, reason}
			w.m.SandboxKills.WithLabelValues(class, reason).Add(float64(n - w.ended[k]))
			w.ended[k] = n
		}
	}
	st := w.store.Load()
	if st == nil || time.Since(w.usageAt) < usageEvery {
		return
	}
	ctx, cancel := context.WithTimeout(context.Background(), 10*time.Second)
	defer cancel()
	u, err := st.Usage(ctx)
	w.usageAt = time.Now()
	if err != nil {
		return // closed, or unreadable: keep the last figures
	}
	w.m.StoredBytes.Set(float64(u.ShardBytes))
	w.m.Shards.Set(float64(u.Shards))
}

// serverOptions count and time every RPC the worker serves.
func (w *workerMetrics) serverOptions() []grpc.ServerOption {
	if w == nil {
		return nil
	}
	return []grpc.ServerOption{
		grpc.ChainUnaryInterceptor(w.m.UnaryInterceptor),
		grpc.ChainStreamInterceptor(w.m.StreamInterceptor),
	}
}
