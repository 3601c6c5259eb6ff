package dnsproxy

import (
	"context"
	"errors"
	"time"

	"google.golang.org/grpc/codes"
	"google.golang.org/grpc/status"

	v1 "github.com/hivemind/taskworker/api/taskworker/v1"
)

// Handle answers DNSService.ResolveDomain for user, the user the pool has
// already established the request acts for (the token's, or the one an
// admin named in user_id). Its errors are gRPC statuses:
//
//	InvalidArgument   the domain or the record type is malformed
//	PermissionDenied  the name is not allowed, or all its addresses are refused
//	NotFound          NXDOMAIN, no records of the type, a broken CNAME chain
//	Unavailable       no upstream resolver answered: try again later
//	Canceled, DeadlineExceeded  the caller's context ended
func (r *Resolver) Handle(ctx context.Context, user string, req *v1.DNSRequest) (*v1.DNSResponse, error) {
	qtype, err := ParseType(req.GetRecordType())
	if err != nil {
		return nil, status.Error(codes.InvalidArgument, err.Error())
	}
	ans, err := r.Resolve(ctx, user, req.GetDomain(), qtype)
	if err != nil {
		return nil, Status(err)
	}
	resp := &v1.DNSResponse{
		Addresses:  make([]string, 0, len(ans.Records)),
		TtlSeconds: uint32(max(ans.TTL/time.Second, 1)),
	}
	for _, rec := range ans.Records {
		resp.Addresses = append(resp.Addresses, rec.String())
	}
	return resp, nil
}

// Status turns an error of Resolve into the gRPC status Handle returns.
func Status(err error) error {
	code := codes.Internal
	switch {
	case errors.Is(err, ErrInvalidName), errors.Is(err, ErrInvalidType):
		code = codes.InvalidArgument
	case errors.Is(err, ErrNameRefused):
		return status.Error(codes.PermissionDenied, err.Error()+"; ask the network's operator to allow the name")
	case errors.Is(err, ErrAllAddressesRefused):
		return status.Error(codes.PermissionDenied, err.Error()+"; the pool never hands out such addresses (the operator may allow a network explicitly)")
	case errors.Is(err, ErrNotFound), errors.Is(err, ErrNoRecords), errors.Is(err, ErrCNAMEChain):
		code = codes.NotFound
	case errors.Is(err, ErrUpstream):
		return status.Error(codes.Unavailable, err.Error()+"; the upstream resolvers may be down or unreachable: try again later")
	case errors.Is(err, context.Canceled):
		code = codes.Canceled
	case errors.Is(err, context.DeadlineExceeded):
		code = codes.DeadlineExceeded
	}
	return status.Error(code, err.Error())
}
