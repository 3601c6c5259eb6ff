package pool

import (
	"context"

	"google.golang.org/grpc/codes"
	"google.golang.org/grpc/status"

	v1 "github.com/hivemind/taskworker/api/taskworker/v1"
)

// dnsService answers until the DNS proxy lands.
type dnsService struct {
	v1.UnimplementedDNSServiceServer
}

func (dnsService) ResolveDomain(context.Context, *v1.DNSRequest) (*v1.DNSResponse, error) {
	return nil, status.Error(codes.Unimplemented, "DNSService.ResolveDomain is not available in this version of TaskWorker yet (the DNS proxy is being built)")
}
