package etcdserver_test

import (
	"context"
	"errors"
	"fmt"
	"strings"
	"testing"
	"time"

	"go.etcd.io/etcd/api/v3/v3rpc/rpctypes"
	clientv3 "go.etcd.io/etcd/client/v3"

	"github.com/hivemind/taskworker/internal/etcdserver"
)

func TestStartPutGetRestart(t *testing.T) {
	dir := t.TempDir()
	ctx := context.Background()
	for i, want := range []string{"", "v"} {
		cfg := etcdserver.DefaultConfig(dir)
		cfg.TickMs, cfg.ElectionMs = 10, 100
		s, err := etcdserver.Start(ctx, cfg)
		if err != nil {
			t.Fatal(err)
		}
		cli, err := clientv3.New(clientv3.Config{Endpoints: s.Endpoints(), DialTimeout: 5 * time.Second})
		if err != nil {
			t.Fatal(err)
		}
		resp, err := cli.Get(ctx, "k")
		if err != nil {
			t.Fatal(err)
		}
		got := ""
		if len(resp.Kvs) > 0 {
			got = string(resp.Kvs[0].Value)
		}
		if got != want {
			t.Fatalf("start %d: k = %q, want %q (data must survive a restart)", i, got, want)
		}
		if _, err := cli.Put(ctx, "k", "v"); err != nil {
			t.Fatal(err)
		}
		cli.Close()
		s.Close()
	}
}

func TestValidate(t *testing.T) {
	cfg := etcdserver.DefaultConfig("")
	if err := cfg.Validate(); err == nil {
		t.Error("empty Dir accepted")
	}
	cfg = etcdserver.DefaultConfig(t.TempDir())
	cfg.ElectionMs = cfg.TickMs
	if err := cfg.Validate(); err == nil {
		t.Error("election timeout equal to tick accepted")
	}
}

// The in-process client reaches the same etcd as the network's clients,
// under the same limits, and closing it leaves etcd serving.
func TestInProcessClient(t *testing.T) {
	ctx := t.Context()
	cfg := etcdserver.DefaultConfig(t.TempDir())
	cfg.TickMs, cfg.ElectionMs = 10, 100
	s, err := etcdserver.Start(ctx, cfg)
	if err != nil {
		t.Fatal(err)
	}
	defer s.Close()
	net, err := clientv3.New(clientv3.Config{Endpoints: s.Endpoints(), DialTimeout: 5 * time.Second})
	if err != nil {
		t.Fatal(err)
	}
	defer net.Close()
	in := s.Client()

	watch := in.Watch(ctx, "w/", clientv3.WithPrefix())
	if _, err := net.Put(ctx, "w/1", "from the network"); err != nil {
		t.Fatal(err)
	}
	select {
	case resp := <-watch:
		if len(resp.Events) != 1 || string(resp.Events[0].Kv.Value) != "from the network" {
			t.Fatalf("in-process watch got %+v", resp)
		}
	case <-time.After(10 * time.Second):
		t.Fatal("the in-process watch saw no put")
	}
	if _, err := in.Put(ctx, "k", "in process"); err != nil {
		t.Fatal(err)
	}
	if resp, err := net.Get(ctx, "k"); err != nil || len(resp.Kvs) != 1 || string(resp.Kvs[0].Value) != "in process" {
		t.Fatalf("the network's client reads %v, %v", resp, err)
	}
	lease, err := in.Grant(ctx, 5)
	if err != nil {
		t.Fatal(err)
	}
	if _, err := in.KeepAliveOnce(ctx, lease.ID); err != nil {
		t.Fatal(err)
	}

	// etcd's own limits hold: too many operations in a transaction, too
	// large a request.
	ops := make([]clientv3.Op, 129)
	for i := range ops {
		ops[i] = clientv3.OpPut(fmt.Sprint("op/", i), "")
	}
	if _, err := in.Txn(ctx).Then(ops...).Commit(); !errors.Is(err, rpctypes.ErrTooManyOps) {
		t.Errorf("a transaction of 129 operations: %v, want %v", err, rpctypes.ErrTooManyOps)
	}
	if _, err := in.Put(ctx, "big", strings.Repeat("x", 2<<20)); !errors.Is(err, rpctypes.ErrRequestTooLarge) {
		t.Errorf("a put of 2 MiB: %v, want %v", err, rpctypes.ErrRequestTooLarge)
	}

	// A call whose context has ended fails with the context's error, as
	// over the network.
	canceled, cancel := context.WithCancel(ctx)
	cancel()
	if _, err := in.Put(canceled, "k", "canceled"); !errors.Is(err, context.Canceled) {
		t.Errorf("a put with its context canceled: %v, want %v", err, context.Canceled)
	}
	late, cancel := context.WithDeadline(ctx, time.Now().Add(-time.Second))
	defer cancel()
	if _, err := in.Put(late, "k", "late"); !errors.Is(err, context.DeadlineExceeded) {
		t.Errorf("a put past its deadline: %v, want %v", err, context.DeadlineExceeded)
	}

	// A deadline that passes while etcd works on the request: etcd's own
	// answer is "request timed out"; the caller's is its deadline's.
	for i := range 200 {
		short, cancel := context.WithTimeout(ctx, time.Duration(100+i*10)*time.Microsecond)
		_, err := in.Put(short, "k", "short")
		cancel()
		if err != nil && !errors.Is(err, context.DeadlineExceeded) {
			t.Fatalf("a put whose deadline passed: %v, want %v", err, context.DeadlineExceeded)
		}
	}
	if _, err := in.Put(ctx, "k", "in process"); err != nil {
		t.Fatal(err)
	}

	in.Close()
	if resp, err := net.Get(ctx, "k"); err != nil || string(resp.Kvs[0].Value) != "in process" {
		t.Fatalf("etcd after the in-process client closed: %v, %v", resp, err)
	}
	// Once etcd stops, in-process calls are refused (a read of its closed
	// store would crash the process), whether or not the client was closed.
	s.Close()
	for i := range 100 {
		if _, err := in.Get(ctx, fmt.Sprint("op/", i), clientv3.WithSerializable()); !errors.Is(err, rpctypes.ErrStopped) {
			t.Fatalf("a read after etcd stopped: %v, want %v", err, rpctypes.ErrStopped)
		}
	}
}
