package pool

import (
	"context"

	"google.golang.org/grpc/codes"
	"google.golang.org/grpc/status"

	v1 "github.com/hivemind/taskworker/api/taskworker/v1"
)

// fileService answers until distributed storage lands: it says so rather
// than pretending.
type fileService struct {
	v1.UnimplementedFileServiceServer
}

func notYet(what string) error {
	return status.Errorf(codes.Unimplemented, "%s is not available in this version of TaskWorker yet (distributed file storage is being built)", what)
}

func (fileService) Push(context.Context, *v1.PushRequest) (*v1.PushResponse, error) {
	return nil, notYet("FileService.Push")
}

func (fileService) Get(context.Context, *v1.GetRequest) (*v1.GetResponse, error) {
	return nil, notYet("FileService.Get")
}

func (fileService) Revise(context.Context, *v1.ReviseRequest) (*v1.ReviseResponse, error) {
	return nil, notYet("FileService.Revise")
}

func (fileService) Synchronous(context.Context, *v1.SynchronousRequest) (*v1.SynchronousResponse, error) {
	return nil, notYet("FileService.Synchronous")
}

// dnsService answers until the DNS proxy lands.
type dnsService struct {
	v1.UnimplementedDNSServiceServer
}

func (dnsService) ResolveDomain(context.Context, *v1.DNSRequest) (*v1.DNSResponse, error) {
	return nil, status.Error(codes.Unimplemented, "DNSService.ResolveDomain is not available in this version of TaskWorker yet (the DNS proxy is being built)")
}
