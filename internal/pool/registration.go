package pool

import (
	"context"

	v1 "github.com/hivemind/taskworker/api/taskworker/v1"
	"github.com/hivemind/taskworker/internal/files"
)

// registryService lets workers join, heartbeat and leave.
type registryService struct {
	v1.UnimplementedRegistryServiceServer
	reg      *registry
	files    *files.Service
	enroller *enroller
}

func (s *registryService) Register(ctx context.Context, req *v1.RegisterRequest) (*v1.RegisterResponse, error) {
	resp, err := s.reg.register(ctx, req)
	if err == nil {
		s.reg.log.Debug("worker registered", "worker", req.WorkerId, "address", resp.Address, "lease", resp.LeaseId)
	}
	return resp, err
}

func (s *registryService) Heartbeat(ctx context.Context, req *v1.HeartbeatRequest) (*v1.HeartbeatResponse, error) {
	return &v1.HeartbeatResponse{}, s.reg.heartbeat(ctx, req)
}

func (s *registryService) Deregister(ctx context.Context, req *v1.DeregisterRequest) (*v1.DeregisterResponse, error) {
	return &v1.DeregisterResponse{}, s.reg.deregister(ctx, req)
}

func (s *registryService) ReportDamage(ctx context.Context, req *v1.ReportDamageRequest) (*v1.ReportDamageResponse, error) {
	return &v1.ReportDamageResponse{}, s.files.ReportDamage(ctx, req.Shards)
}
