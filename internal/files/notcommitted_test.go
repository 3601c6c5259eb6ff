package files_test

import (
	"testing"
	"time"

	"google.golang.org/grpc/codes"
	"google.golang.org/grpc/status"

	v1 "github.com/hivemind/taskworker/api/taskworker/v1"
	"github.com/hivemind/taskworker/internal/cluster"
	"github.com/hivemind/taskworker/internal/serving"
)

// Every write that fails before its commit is sent to etcd says so
// (serving.NotCommitted), through the Go client, whatever its code; a
// write that succeeds returns no error at all.
func TestWriteFailuresBeforeTheCommitAreMarkedNotCommitted(t *testing.T) {
	c := cluster.New(t, cluster.Options{Workers: 1})
	cl := c.Client(0)
	ctx := ctxTimeout(t, 2*time.Minute)
	fs := v1.NewFileServiceClient(cl.Conn())
	base, err := cl.Push(ctx, "base", randomBytes(10<<10))
	if err != nil {
		t.Fatal(err)
	}
	const missing = "aaaaaaaaaaaaaaaaaaaaaaaaaa"
	var pushed string
	upload := func(h *v1.UploadHeader, data []byte) error {
		stream, err := fs.Upload(ctx)
		if err != nil {
			return err
		}
		if err := stream.Send(&v1.UploadRequest{Part: &v1.UploadRequest_Header{Header: h}}); err != nil {
			return err
		}
		if data != nil {
			_ = stream.Send(&v1.UploadRequest{Part: &v1.UploadRequest_Data{Data: data}})
		}
		_, err = stream.CloseAndRecv()
		return err
	}
	type tc struct {
		name string
		call func() error
		code codes.Code
	}
	run := func(cases []tc) {
		for _, tc := range cases {
			err := tc.call()
			if status.Code(err) != tc.code {
				t.Errorf("%s: %v; want %v", tc.name, err, tc.code)
				continue
			}
			if want := tc.code != codes.OK; serving.IsNotCommitted(err) != want {
				t.Errorf("%s: %v; marked not committed: %v, want %v", tc.name, err, !want, want)
			}
		}
	}
	run([]tc{
		{"push", func() error {
			info, err := cl.Push(ctx, "a", randomBytes(10<<10))
			if err == nil {
				pushed = info.FileId
			}
			return err
		}, codes.OK},
		{"push of a name with a control character", func() error { _, err := cl.Push(ctx, "a\n", []byte("x")); return err }, codes.InvalidArgument},
		{"revise", func() error { _, err := cl.Revise(ctx, base.FileId, randomBytes(10<<10), 1); return err }, codes.OK},
		{"revise of a version that moved on", func() error { _, err := cl.Revise(ctx, base.FileId, []byte("x"), 1); return err }, codes.FailedPrecondition},
		{"revise of a missing file", func() error { _, err := cl.Revise(ctx, missing, []byte("x"), 0); return err }, codes.NotFound},
		{"revise of a bad file id", func() error { _, err := cl.Revise(ctx, "no/such", []byte("x"), 0); return err }, codes.InvalidArgument},
		{"upload without a header", func() error {
			stream, err := fs.Upload(ctx)
			if err != nil {
				return err
			}
			_ = stream.Send(&v1.UploadRequest{Part: &v1.UploadRequest_Data{Data: []byte("x")}})
			_, err = stream.CloseAndRecv()
			return err
		}, codes.InvalidArgument},
		{"upload of a negative size", func() error { return upload(&v1.UploadHeader{Filename: "u", Size: -1}, nil) }, codes.InvalidArgument},
		{"upload short of its declared size", func() error { return upload(&v1.UploadHeader{Filename: "u", Size: 20 << 10}, randomBytes(10<<10)) }, codes.InvalidArgument},
		{"upload revising a version that moved on", func() error {
			return upload(&v1.UploadHeader{FileId: base.FileId, ExpectedVersion: 1}, randomBytes(10<<10))
		}, codes.FailedPrecondition},
		{"delete of a missing file", func() error { return cl.Delete(ctx, missing) }, codes.NotFound},
		{"delete", func() error { return cl.Delete(ctx, base.FileId) }, codes.OK},
		{"delete of a deleted file", func() error { return cl.Delete(ctx, base.FileId) }, codes.NotFound},
		{"delete of the pushed file", func() error { return cl.Delete(ctx, pushed) }, codes.OK},
	})

	// No worker left to store shards: the writes fail before their
	// commit. (A small file needs none: it is kept in etcd.)
	c.KillWorker(0)
	waitFor(t, time.Minute, "the worker gone", func() bool { return adminStatus(t, ctx, cl).Workers == 0 })
	inline, err := cl.Push(ctx, "small", []byte("kept in etcd"))
	if err != nil {
		t.Fatal(err)
	}
	run([]tc{
		{"push with no worker", func() error { _, err := cl.Push(ctx, "b", randomBytes(10<<10)); return err }, codes.Unavailable},
		{"upload with no worker", func() error { return upload(&v1.UploadHeader{Filename: "b"}, randomBytes(10<<10)) }, codes.Unavailable},
		{"revise with no worker", func() error { _, err := cl.Revise(ctx, inline.FileId, randomBytes(10<<10), 0); return err }, codes.Unavailable},
		{"revise of a small file with no worker", func() error { _, err := cl.Revise(ctx, inline.FileId, []byte("still small"), 0); return err }, codes.OK},
	})
}
