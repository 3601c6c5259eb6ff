// Package metrics is where a TaskWorker process keeps its Prometheus
// metrics: one registry per process, the metric families every part reports
// into, a gRPC interceptor that counts and times every RPC served, and the
// HTTP server of --metrics-listen.
//
// Names follow Prometheus's conventions: taskworker_ prefix, base units
// (seconds, bytes), _total for counters. Labels are bounded: function names
// (bounded by what is deployed and registered), gRPC codes, methods, and a
// few fixed words; never user names, file ids or task ids.
//
// # Caveats
//
//   - A function label per deployed function grows with what users deploy:
//     an operator with very many functions should drop the label at
//     scrape time (metric_relabel_configs).
package metrics

import (
	"context"
	"errors"
	"net"
	"net/http"
	"slices"
	"strings"
	"sync"
	"time"

	"github.com/prometheus/client_golang/prometheus"
	"github.com/prometheus/client_golang/prometheus/collectors"
	"github.com/prometheus/client_golang/prometheus/promhttp"
	dto "github.com/prometheus/client_model/go"
	"google.golang.org/grpc/codes"
	"google.golang.org/grpc/status"
)

// Metrics holds one process's registry and metric families. The zero value
// is not usable; New makes one.
type Metrics struct {
	Registry *prometheus.Registry

	okRPCs, okCalls seriesCache

	// Every gRPC method served, by method and code (the interceptors).
	RPCs       *prometheus.CounterVec
	RPCSeconds *prometheus.HistogramVec

	// Function calls, by function and code: on a pool, those it routed; on
	// a worker, those it ran.
	Calls         *prometheus.CounterVec
	CallSeconds   *prometheus.HistogramVec
	CallsInFlight prometheus.Gauge
	// CallRetries counts calls a pool sent to another worker after one failed.
	CallRetries *prometheus.CounterVec

	// Workers is how many workers a pool has live; WorkerCalls their calls
	// in flight, by worker.
	Workers     prometheus.Gauge
	WorkerCalls *prometheus.GaugeVec

	// Sandbox child processes, by class (starlark, wasm): running, started,
	// and killed by reason: a limit hit (time, memory, output), the caller
	// canceling, or a crash.
	SandboxProcesses *prometheus.GaugeVec
	SandboxStarts    *prometheus.CounterVec
	SandboxKills     *prometheus.CounterVec

	// Storage: bytes and shards held (a worker), files by how many more
	// shards they can lose (a pool), repair's backlog and work done.
	StoredBytes       prometheus.Gauge
	Shards            prometheus.Gauge
	FilesByRedundancy *prometheus.GaugeVec
	RepairBacklog     prometheus.Gauge
	RepairedShards    prometheus.Counter

	// The pool as function code's door: egress requests and DNS answers by
	// decision (allowed, denied), secret reads by outcome.
	EgressRequests *prometheus.CounterVec
	DNSQueries     *prometheus.CounterVec
	SecretReads    *prometheus.CounterVec

	// Tasks by state, as this pool last counted them, and attempts by
	// outcome.
	Tasks        *prometheus.GaugeVec
	TaskAttempts *prometheus.CounterVec

	// QuotaNearLimit counts users at or above 90% of a quota, by resource
	// (the pool counts storage_bytes): a count, never the users' names.
	QuotaNearLimit *prometheus.GaugeVec

	mu       sync.Mutex
	onScrape []func()
}

// latency buckets from 100 µs to 30 s: a call through the pool takes a few
// hundred microseconds, a task or a file transfer may take many seconds.
var latency = []float64{.0001, .00025, .0005, .001, .0025, .005, .01, .025, .05, .1, .25, .5, 1, 2.5, 5, 10, 30}

// New returns a pool's metrics: every family, with Go's and the process's
// own collectors registered too.
func New() *Metrics {
	m := families()
	m.Registry.MustRegister(collectors.NewGoCollector(), collectors.NewProcessCollector(collectors.ProcessCollectorOpts{}),
		m.RPCs, m.RPCSeconds, m.Calls, m.CallSeconds, m.CallsInFlight, m.CallRetries, m.Workers, m.WorkerCalls,
		m.SandboxProcesses, m.SandboxStarts, m.SandboxKills, m.StoredBytes, m.Shards, m.FilesByRedundancy,
		m.RepairBacklog, m.RepairedShards, m.EgressRequests, m.DNSQueries, m.SecretReads, m.Tasks, m.TaskAttempts, m.QuotaNearLimit)
	return m
}

// NewWorker returns a worker's metrics: the families a worker feeds (the
// RPCs it serves, the calls it runs, its sandbox's processes, the shards it
// holds), with Go's and the process's own collectors. The others are made
// but not registered, so a worker exports no pool gauge stuck at zero.
func NewWorker() *Metrics {
	m := families()
	m.Registry.MustRegister(collectors.NewGoCollector(), collectors.NewProcessCollector(collectors.ProcessCollectorOpts{}),
		m.RPCs, m.RPCSeconds, m.Calls, m.CallSeconds, m.CallsInFlight,
		m.SandboxProcesses, m.SandboxStarts, m.SandboxKills, m.StoredBytes, m.Shards)
	return m
}

func families() *Metrics {
	m := &Metrics{
		Registry: prometheus.NewRegistry(),
		RPCs: prometheus.NewCounterVec(prometheus.CounterOpts{Name: "taskworker_grpc_requests_total",
			Help: "gRPC requests served, by method and status code."}, []string{"method", "code"}),
		RPCSeconds: prometheus.NewHistogramVec(prometheus.HistogramOpts{Name: "taskworker_grpc_request_duration_seconds",
			Help: "Time to serve a gRPC request (a stream: its whole life), by method.", Buckets: latency}, []string{"method"}),
		Calls: prometheus.NewCounterVec(prometheus.CounterOpts{Name: "taskworker_calls_total",
			Help: "Function calls, by function and status code."}, []string{"function", "code"}),
		CallSeconds: prometheus.NewHistogramVec(prometheus.HistogramOpts{Name: "taskworker_call_duration_seconds",
			Help: "Time of a function call, by function.", Buckets: latency}, []string{"function"}),
		CallsInFlight: prometheus.NewGauge(prometheus.GaugeOpts{Name: "taskworker_calls_in_flight",
			Help: "Function calls running now (a pool: those it routes; a worker: those it runs)."}),
		CallRetries: prometheus.NewCounterVec(prometheus.CounterOpts{Name: "taskworker_call_retries_total",
			Help: "Calls sent to another worker after a worker failed, by function."}, []string{"function"}),
		Workers: prometheus.NewGauge(prometheus.GaugeOpts{Name: "taskworker_workers",
			Help: "Live workers registered with this pool."}),
		WorkerCalls: prometheus.NewGaugeVec(prometheus.GaugeOpts{Name: "taskworker_worker_calls_in_flight",
			Help: "Calls this pool has in flight on each worker."}, []string{"worker"}),
		SandboxProcesses: prometheus.NewGaugeVec(prometheus.GaugeOpts{Name: "taskworker_sandbox_processes",
			Help: "Sandbox child processes alive, by class."}, []string{"class"}),
		SandboxStarts: prometheus.NewCounterVec(prometheus.CounterOpts{Name: "taskworker_sandbox_starts_total",
			Help: "Sandbox child processes started, by class."}, []string{"class"}),
		SandboxKills: prometheus.NewCounterVec(prometheus.CounterOpts{Name: "taskworker_sandbox_kills_total",
			Help: "Sandbox child processes ended during a call, by class and reason (time, memory, output: limits hit; canceled; crash)."}, []string{"class", "reason"}),
		StoredBytes: prometheus.NewGauge(prometheus.GaugeOpts{Name: "taskworker_stored_bytes",
			Help: "Bytes of shards this worker holds."}),
		Shards: prometheus.NewGauge(prometheus.GaugeOpts{Name: "taskworker_shards",
			Help: "Shards this worker holds."}),
		FilesByRedundancy: prometheus.NewGaugeVec(prometheus.GaugeOpts{Name: "taskworker_files",
			Help: "File versions, by redundancy (full, single_copy, reduced, lost)."}, []string{"redundancy"}),
		RepairBacklog: prometheus.NewGauge(prometheus.GaugeOpts{Name: "taskworker_repair_backlog_files",
			Help: "File versions waiting for repair."}),
		RepairedShards: prometheus.NewCounter(prometheus.CounterOpts{Name: "taskworker_repaired_shards_total",
			Help: "Shards rebuilt by repair."}),
		EgressRequests: prometheus.NewCounterVec(prometheus.CounterOpts{Name: "taskworker_egress_requests_total",
			Help: "Outbound requests through the pool, by decision (allowed, denied)."}, []string{"decision"}),
		DNSQueries: prometheus.NewCounterVec(prometheus.CounterOpts{Name: "taskworker_dns_queries_total",
			Help: "DNS questions answered by the pool, by decision (answered, denied, not_found)."}, []string{"decision"}),
		SecretReads: prometheus.NewCounterVec(prometheus.CounterOpts{Name: "taskworker_secret_reads_total",
			Help: "Secret reads by function code, by outcome (granted, denied)."}, []string{"outcome"}),
		Tasks: prometheus.NewGaugeVec(prometheus.GaugeOpts{Name: "taskworker_tasks",
			Help: "Tasks by state, as this pool last counted them."}, []string{"state"}),
		QuotaNearLimit: prometheus.NewGaugeVec(prometheus.GaugeOpts{Name: "taskworker_quota_users_near_limit",
			Help: "Users at or above 90% of a quota, by resource (storage_bytes, modules, module_bytes, tasks)."}, []string{"resource"}),
		TaskAttempts: prometheus.NewCounterVec(prometheus.CounterOpts{Name: "taskworker_task_attempts_total",
			Help: "Task attempts this pool ran, by outcome (succeeded, failed, retried, handed_back)."}, []string{"outcome"}),
	}
	return m
}

// ObserveCall records one call of function (its name as called) that took
// d and ended with err.
func (m *Metrics) ObserveCall(function string, err error, d time.Duration) {
	if err == nil {
		s := m.okCalls.series(function, func() series {
			label := FunctionLabel(function, codes.OK)
			return series{m.Calls.WithLabelValues(label, codes.OK.String()), m.CallSeconds.WithLabelValues(label)}
		})
		s.count.Inc()
		s.seconds.Observe(d.Seconds())
		return
	}
	code := status.Code(err)
	label := FunctionLabel(function, code)
	m.Calls.WithLabelValues(label, code.String()).Inc()
	m.CallSeconds.WithLabelValues(label).Observe(d.Seconds())
}

// series is a counter and a histogram of one label value, resolved once.
type series struct {
	count   prometheus.Counter
	seconds prometheus.Observer
}

// seriesCache holds the series of the calls or RPCs that succeeded, by
// name: the common case then costs two atomic adds and no lookup of
// labels in the vectors. It holds what the vectors do, so it is bounded
// as they are.
type seriesCache struct{ m sync.Map }

// series returns name's series, resolving them the first time.
func (c *seriesCache) series(name string, resolve func() series) *series {
	if s, ok := c.m.Load(name); ok {
		return s.(*series)
	}
	s := resolve()
	v, _ := c.m.LoadOrStore(name, &s)
	return v.(*series)
}

// OnScrape adds f to what runs before each scrape of Serve's /metrics:
// the place to read gauges that are costly to keep current all the time.
func (m *Metrics) OnScrape(f func()) {
	m.mu.Lock()
	defer m.mu.Unlock()
	m.onScrape = append(m.onScrape, f)
}

// Gather runs the OnScrape functions and gathers the registry.
func (m *Metrics) Gather() ([]*dto.MetricFamily, error) {
	m.mu.Lock()
	fs := slices.Clone(m.onScrape)
	m.mu.Unlock()
	for _, f := range fs {
		f()
	}
	return m.Registry.Gather()
}

// FunctionLabel is a call's function as a metric label: its name without
// the owner (labels never name users), and "-" for a call refused before
// it reached a function, whose name may be anything a caller typed.
func FunctionLabel(name string, code codes.Code) string {
	switch code {
	case codes.NotFound, codes.InvalidArgument, codes.Unauthenticated, codes.PermissionDenied:
		return "-"
	}
	if _, fn, ok := strings.Cut(name, "/"); ok {
		return fn
	}
	return name
}

// Serve serves /metrics on addr until ctx ends, and returns the address it
// listens on (port 0 picks one).
func (m *Metrics) Serve(ctx context.Context, addr string) (net.Addr, error) {
	l, err := net.Listen("tcp", addr)
	if err != nil {
		return nil, err
	}
	mux := http.NewServeMux()
	mux.Handle("/metrics", promhttp.HandlerFor(prometheus.GathererFunc(m.Gather), promhttp.HandlerOpts{Registry: m.Registry}))
	srv := &http.Server{Handler: mux, ReadHeaderTimeout: 10 * time.Second}
	go func() {
		if err := srv.Serve(l); err != nil && !errors.Is(err, http.ErrServerClosed) {
			_ = l.Close()
		}
	}()
	context.AfterFunc(ctx, func() {
		sctx, cancel := context.WithTimeout(context.Background(), 2*time.Second)
		defer cancel()
		_ = srv.Shutdown(sctx)
	})
	return l.Addr(), nil
}
