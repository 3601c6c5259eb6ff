package auth

import (
	"context"
	"crypto/subtle"

	"google.golang.org/grpc"
	"google.golang.org/grpc/codes"
	"google.golang.org/grpc/metadata"
	"google.golang.org/grpc/status"
)

// UnaryCallKeyInterceptor admits a unary call to a worker as the table
// says: an Open method for anyone, a CallKey method only if the call's
// metadata carries key under HeaderCallKey (so a worker serves only the
// pool it registered with), any other method for nobody. It panics if key
// is empty, which would admit every caller that sends an empty header.
func UnaryCallKeyInterceptor(key string) grpc.UnaryServerInterceptor {
	check := callKeyChecker(key)
	return func(ctx context.Context, req any, info *grpc.UnaryServerInfo, handler grpc.UnaryHandler) (any, error) {
		if err := check(ctx, info.FullMethod); err != nil {
			return nil, err
		}
		return handler(ctx, req)
	}
}

// StreamCallKeyInterceptor is UnaryCallKeyInterceptor for streaming calls.
func StreamCallKeyInterceptor(key string) grpc.StreamServerInterceptor {
	check := callKeyChecker(key)
	return func(srv any, ss grpc.ServerStream, info *grpc.StreamServerInfo, handler grpc.StreamHandler) error {
		if err := check(ss.Context(), info.FullMethod); err != nil {
			return err
		}
		return handler(srv, ss)
	}
}

func callKeyChecker(key string) func(ctx context.Context, method string) error {
	if key == "" {
		panic("auth: the call key is empty; the worker must have one (auth.NewSecret)")
	}
	want := []byte(key)
	return func(ctx context.Context, method string) error {
		switch access := Lookup(Worker, method); access {
		case Open:
			return nil
		case CallKey:
		default:
			return refused(Worker, method, access)
		}
		md, _ := metadata.FromIncomingContext(ctx)
		got := md.Get(HeaderCallKey)
		switch {
		case len(got) == 0:
			return status.Errorf(codes.PermissionDenied, "%s: this worker serves only its pool, and the call carried no %s; call through the pool, not the worker", method, HeaderCallKey)
		case len(got) > 1 || subtle.ConstantTimeCompare([]byte(got[0]), want) != 1:
			return status.Errorf(codes.PermissionDenied, "%s: this worker serves only its pool, and the call's %s is not this worker's; call through the pool, not the worker", method, HeaderCallKey)
		}
		return nil
	}
}
