package metrics

import (
	"context"
	"time"

	"google.golang.org/grpc"
	"google.golang.org/grpc/codes"
	"google.golang.org/grpc/status"
)

// UnaryInterceptor counts and times every unary RPC served.
func (m *Metrics) UnaryInterceptor(ctx context.Context, req any, info *grpc.UnaryServerInfo, handler grpc.UnaryHandler) (any, error) {
	start := time.Now()
	resp, err := handler(ctx, req)
	m.observeRPC(info.FullMethod, err, time.Since(start))
	return resp, err
}

// StreamInterceptor counts and times every stream served, over its life.
func (m *Metrics) StreamInterceptor(srv any, ss grpc.ServerStream, info *grpc.StreamServerInfo, handler grpc.StreamHandler) error {
	start := time.Now()
	err := handler(srv, ss)
	m.observeRPC(info.FullMethod, err, time.Since(start))
	return err
}

func (m *Metrics) observeRPC(method string, err error, d time.Duration) {
	if err == nil {
		s := m.okRPCs.series(method, func() series {
			return series{m.RPCs.WithLabelValues(method, codes.OK.String()), m.RPCSeconds.WithLabelValues(method)}
		})
		s.count.Inc()
		s.seconds.Observe(d.Seconds())
		return
	}
	m.RPCs.WithLabelValues(method, status.Code(err).String()).Inc()
	m.RPCSeconds.WithLabelValues(method).Observe(d.Seconds())
}
