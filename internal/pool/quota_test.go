package pool_test

import (
	"context"
	"slices"
	"strings"
	"testing"
	"time"

	clientv3 "go.etcd.io/etcd/client/v3"
	"google.golang.org/grpc/codes"
	"google.golang.org/grpc/status"

	"github.com/hivemind/taskworker"
	v1 "github.com/hivemind/taskworker/api/taskworker/v1"
	"github.com/hivemind/taskworker/internal/cluster"
	"github.com/hivemind/taskworker/internal/pool"
	"github.com/hivemind/taskworker/internal/quota"
)

// TestQuotasRefuseBeforeStoring crosses each quota the pool enforces: the
// deploy or call that would go over is refused with ResourceExhausted,
// naming the quota and the use, and leaves nothing in etcd.
func TestQuotasRefuseBeforeStoring(t *testing.T) {
	limits := map[string]quota.Limits{
		"bob":   {Modules: 2},
		"carol": {ModuleBytes: 100},
		"dave":  {Calls: 1},
	}
	c := cluster.New(t, cluster.Options{Workers: 1, PoolConfig: func(_ int, cfg *pool.Config) {
		cfg.Quotas = func(_ context.Context, user string) (quota.Limits, error) { return limits[user], nil }
	}})
	ctx := ctxTimeout(t, time.Minute)
	bob, carol, dave := userClient(ctx, t, c, "bob"), userClient(ctx, t, c, "carol"), userClient(ctx, t, c, "dave")
	star := taskworker.DeploySpec{Runtime: v1.Runtime_RUNTIME_STARLARK, Export: "add2"}
	module := func(n string) []byte { return []byte(addScript + "# " + n + "\n") }

	for _, n := range []string{"one", "two"} {
		if _, err := bob.Deploy(ctx, n, module(n), star); err != nil {
			t.Fatal(err)
		}
	}
	before := etcdKeys(ctx, t, c)
	refused := func(who string, err error, msg string) {
		t.Helper()
		st := status.Convert(err)
		if st.Code() != codes.ResourceExhausted || !strings.Contains(st.Message(), msg) {
			t.Errorf("%s: %s %q; want ResourceExhausted saying %q", who, st.Code(), st.Message(), msg)
		}
		if after := etcdKeys(ctx, t, c); !slices.Equal(after, before) {
			t.Errorf("%s: refused, and etcd's deploy and module keys changed from %v to %v", who, before, after)
		}
	}
	_, err := bob.Deploy(ctx, "three", module("three"), star)
	refused("Bob's third module", err, "modules quota: user bob has 2 distinct modules in the versions of their deployed functions, and the quota allows 2")
	_, err = bob.Deploy(ctx, "one", module("three"), star)
	refused("Bob's third module as a new version", err, "modules quota")
	// A module Bob has already is no new one.
	if _, err := bob.Deploy(ctx, "three", module("one"), star); err != nil {
		t.Errorf("Bob deploying a module he has: %v", err)
	}
	before = etcdKeys(ctx, t, c)
	_, err = carol.Deploy(ctx, "big", module(strings.Repeat("x", 100)), star)
	refused("Carol's module over her bytes", err, "module bytes quota: user carol's modules take 0 bytes, this one 136 more, and the quota allows 100")

	// Calls: Dave may run one at a time on the pool. His long call may
	// lose the one slot to a probe of the loop below, and is then started
	// again.
	done := make(chan error, 1)
	sleep := func() {
		go func() {
			_, err := dave.Call(ctx, "sleep", 5000)
			done <- err
		}()
	}
	sleep()
	for {
		select {
		case err := <-done:
			if status.Code(err) != codes.ResourceExhausted {
				t.Fatalf("Dave's long call ended before his second: %v", err)
			}
			sleep()
			continue
		default:
		}
		if _, err := dave.Call(ctx, "add", 1, 2); status.Code(err) == codes.ResourceExhausted {
			break
		}
		time.Sleep(10 * time.Millisecond)
	}
	_, err = dave.Call(ctx, "add", 1, 2)
	refused("Dave's second call at once", err, "calls quota: user dave has 1 calls running on this pool, and the quota allows 1 at once")
	if out, err := bob.Call(ctx, "add", 1, 2); err != nil || string(out) != "3" {
		t.Errorf("Bob's call while Dave is at his quota: %s, %v", out, err)
	}
	if err := <-done; err != nil {
		t.Fatal(err)
	}
	if out, err := dave.Call(ctx, "add", 1, 2); err != nil || string(out) != "3" {
		t.Errorf("Dave's call once his first ended: %s, %v", out, err)
	}
}

// etcdKeys lists the keys of deployed functions and modules in the
// network's etcd.
func etcdKeys(ctx context.Context, t *testing.T, c *cluster.Cluster) []string {
	t.Helper()
	var keys []string
	for _, prefix := range []string{"/taskworker/deploy/", "/taskworker/modules/"} {
		resp, err := c.EtcdClient().Get(ctx, prefix, clientv3.WithPrefix(), clientv3.WithKeysOnly())
		if err != nil {
			t.Fatal(err)
		}
		for _, kv := range resp.Kvs {
			keys = append(keys, string(kv.Key))
		}
	}
	return keys
}

// The sandbox processes quota: a user's deployed calls running at once on a
// worker. The call past it is refused on the worker before it takes a
// process, and the user's calls run again once one ends.
func TestSandboxProcessesQuota(t *testing.T) {
	limits := map[string]quota.Limits{"erin": {SandboxProcesses: 1}}
	c := cluster.New(t, cluster.Options{Workers: 1, Sandbox: true, StarlarkCommand: starlarkCommand, PoolConfig: func(_ int, cfg *pool.Config) {
		cfg.Quotas = func(_ context.Context, user string) (quota.Limits, error) { return limits[user], nil }
	}})
	ctx := ctxTimeout(t, 2*time.Minute)
	erin := userClient(ctx, t, c, "erin")
	const spin = "def spin(n):\n    x = 0\n    for i in range(n):\n        x += i\n    return x\n"
	star := taskworker.DeploySpec{Runtime: v1.Runtime_RUNTIME_STARLARK, Export: "spin", Timeout: time.Minute, Concurrency: 4}
	if _, err := erin.Deploy(ctx, "spin", []byte(spin), star); err != nil {
		t.Fatal(err)
	}
	if _, err := erin.Call(ctx, "spin", 10); err != nil {
		t.Fatal(err)
	}
	// The long call may lose the one place to a probe: it is then started
	// again.
	long, cancel := context.WithCancel(ctx)
	defer cancel()
	done := make(chan error, 1)
	start := func() { go func() { _, err := erin.Call(long, "spin", 1<<40); done <- err }() }
	start()
	for {
		select {
		case err := <-done:
			if status.Code(err) != codes.ResourceExhausted {
				t.Fatalf("the long call ended: %v", err)
			}
			start()
		default:
		}
		_, err := erin.Call(ctx, "spin", 10)
		if status.Code(err) == codes.ResourceExhausted {
			if !strings.Contains(err.Error(), "sandbox processes quota of erin exceeded: the limit is 1, 1 in use") {
				t.Fatalf("the refusal: %v", err)
			}
			break
		}
		if err != nil {
			t.Fatal(err)
		}
		time.Sleep(10 * time.Millisecond)
	}
	cancel()
	<-done
	for { // the long call's process is freed as its cancellation reaches the worker
		if _, err := erin.Call(ctx, "spin", 10); err == nil {
			break
		} else if status.Code(err) != codes.ResourceExhausted {
			t.Fatal(err)
		}
		time.Sleep(20 * time.Millisecond)
	}
}
