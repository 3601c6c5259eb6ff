package etcdserver_test

import (
	"context"
	"testing"
	"time"

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
