package auth

import (
	"context"

	"google.golang.org/grpc"
	"google.golang.org/grpc/codes"
	"google.golang.org/grpc/status"
)

// UnaryWorkerInterceptor admits a unary call to a worker as the table
// says: an Open method for anyone, a PoolCert method only if isPool
// accepts the caller (the pool's certificate, checked by the worker), any
// other method for nobody. isPool's error says why the caller is not the
// pool.
func UnaryWorkerInterceptor(isPool func(ctx context.Context) error) grpc.UnaryServerInterceptor {
	check := workerChecker(isPool)
	return func(ctx context.Context, req any, info *grpc.UnaryServerInfo, handler grpc.UnaryHandler) (any, error) {
		if err := check(ctx, info.FullMethod); err != nil {
			return nil, err
		}
		return handler(ctx, req)
	}
}

// StreamWorkerInterceptor is UnaryWorkerInterceptor for streaming calls.
func StreamWorkerInterceptor(isPool func(ctx context.Context) error) grpc.StreamServerInterceptor {
	check := workerChecker(isPool)
	return func(srv any, ss grpc.ServerStream, info *grpc.StreamServerInfo, handler grpc.StreamHandler) error {
		if err := check(ss.Context(), info.FullMethod); err != nil {
			return err
		}
		return handler(srv, ss)
	}
}

func workerChecker(isPool func(ctx context.Context) error) func(ctx context.Context, method string) error {
	return func(ctx context.Context, method string) error {
		switch access := Lookup(Worker, method); access {
		case Open:
			return nil
		case PoolCert:
		default:
			return refused(Worker, method, access)
		}
		if err := isPool(ctx); err != nil {
			return status.Errorf(codes.PermissionDenied, "%s: this worker serves only its pool, and the caller is not it (%v); call through the pool, not the worker", method, err)
		}
		return nil
	}
}
