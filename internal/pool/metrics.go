package pool

import (
	"context"
	"time"

	"google.golang.org/grpc"

	v1 "github.com/hivemind/taskworker/api/taskworker/v1"
)

// metricsOptions feed Config.Metrics from the server: every RPC counted and
// timed, and function calls by function and code, with their latency. They
// run before authentication, so refusals are counted too.
func (s *Server) metricsOptions() []grpc.ServerOption {
	m := s.cfg.Metrics
	if m == nil {
		return nil
	}
	return []grpc.ServerOption{
		grpc.ChainUnaryInterceptor(m.UnaryInterceptor, s.observeCall),
		grpc.ChainStreamInterceptor(m.StreamInterceptor),
	}
}

func (s *Server) observeCall(ctx context.Context, req any, info *grpc.UnaryServerInfo, handler grpc.UnaryHandler) (any, error) {
	call, ok := req.(*v1.FunctionCallRequest)
	if !ok || info.FullMethod != v1.RPCService_CallFunction_FullMethodName {
		return handler(ctx, req)
	}
	m := s.cfg.Metrics
	m.CallsInFlight.Inc()
	start := time.Now()
	resp, err := handler(ctx, req)
	m.CallsInFlight.Dec()
	m.ObserveCall(call.FunctionName, err, time.Since(start))
	return resp, err
}

// metricsEvery is how often the gauges of workers and storage are read.
const metricsEvery = 10 * time.Second

// runMetrics keeps the gauges of Config.Metrics current until ctx ends: live
// workers and their calls in flight, file versions by redundancy, the repair
// backlog and the shards rebuilt, the users near a quota.
func (s *Server) runMetrics(ctx context.Context) {
	m := s.cfg.Metrics
	if m == nil {
		return
	}
	var rebuilt int64
	t := time.NewTicker(metricsEvery)
	defer t.Stop()
	for {
		ws := s.reg.list()
		m.Workers.Set(float64(len(ws)))
		m.WorkerCalls.Reset()
		for _, w := range ws {
			m.WorkerCalls.WithLabelValues(w.WorkerId).Set(float64(w.Inflight))
		}
		sctx, cancel := context.WithTimeout(ctx, metricsEvery)
		if st, err := s.files.Status(sctx); err == nil {
			for label, n := range map[string]int64{"full": st.FilesFull, "single_copy": st.FilesSingleCopy,
				"reduced": st.FilesReduced, "lost": st.FilesLost} {
				m.FilesByRedundancy.WithLabelValues(label).Set(float64(n))
			}
			m.RepairBacklog.Set(float64(st.RepairsPending))
			if st.ShardsRebuilt > rebuilt {
				m.RepairedShards.Add(float64(st.ShardsRebuilt - rebuilt))
			}
			rebuilt = st.ShardsRebuilt
		}
		s.countNearLimit(sctx)
		cancel()
		select {
		case <-ctx.Done():
			return
		case <-t.C:
		}
	}
}

// nearLimitPercent is how much of a quota a user uses to count as near it.
const nearLimitPercent = 90

// countNearLimit sets, for each quota whose use the pool can read, the
// users at or above nearLimitPercent of it: stored bytes, distinct modules
// and their bytes, and tasks not yet ended. (Calls and sandbox processes
// are in-flight bounds, met and left within a call: not counted.) Users
// are those who hold a token. A user whose use cannot be read is not
// counted, and the gauge keeps its last count when the quotas are
// unreadable.
func (s *Server) countNearLimit(ctx context.Context) {
	s.tokens.mu.RLock()
	users := map[string]bool{}
	for _, rec := range s.tokens.byHash {
		if rec.User != "" && rec.Role != v1.Role_ROLE_WORKER {
			users[rec.User] = true
		}
	}
	s.tokens.mu.RUnlock()
	near := map[string]int{"storage_bytes": 0, "modules": 0, "module_bytes": 0, "tasks": 0}
	count := func(resource string, used, limit int64) {
		if limit > 0 && used*100 >= limit*nearLimitPercent {
			near[resource]++
		}
	}
	for user := range users {
		l, err := s.quotas.Limits(ctx, user)
		if err != nil {
			return
		}
		if l.StorageBytes > 0 {
			if used, err := s.files.StorageUsed(ctx, user); err == nil {
				count("storage_bytes", used, l.StorageBytes)
			}
		}
		if (l.Modules > 0 || l.ModuleBytes > 0) && s.deploy != nil {
			if sizes, _, err := s.deploy.moduleUse(ctx, user); err == nil {
				var total int64
				for _, n := range sizes {
					total += n
				}
				count("modules", int64(len(sizes)), l.Modules)
				count("module_bytes", total, l.ModuleBytes)
			}
		}
		if l.Tasks > 0 && s.taskStore != nil {
			if n, err := s.taskStore.Active(ctx, user); err == nil {
				count("tasks", n, l.Tasks)
			}
		}
	}
	for resource, n := range near {
		s.cfg.Metrics.QuotaNearLimit.WithLabelValues(resource).Set(float64(n))
	}
}
