package taskworker_test

import (
	"bytes"
	"context"
	"fmt"
	"io"
	"strings"
	"sync"
	"sync/atomic"
	"testing"
	"time"

	"google.golang.org/grpc"
	"google.golang.org/grpc/codes"
	"google.golang.org/grpc/status"

	"github.com/hivemind/taskworker"
	v1 "github.com/hivemind/taskworker/api/taskworker/v1"
	"github.com/hivemind/taskworker/internal/cluster"
	"github.com/hivemind/taskworker/internal/pool"
	"github.com/hivemind/taskworker/internal/pools"
)

// A client of two pools under a steady load of calls, pushes and reads:
// one pool stopped gracefully mid-load fails none of them; started again,
// it takes calls again; the other one killed mid-load fails only what it
// had begun (and the client does not claim those were not carried out),
// and every call after goes to the pool that is left.
func TestClientOfSeveralPools(t *testing.T) {
	c := cluster.New(t, cluster.Options{Pools: 2, Workers: 3})
	ctx, cancel := context.WithTimeout(context.Background(), 2*time.Minute)
	defer cancel()
	list := c.PoolAddr(0) + "," + c.PoolAddr(1)
	cl, err := taskworker.Dial(list, taskworker.WithToken(c.AdminToken), taskworker.WithCA(c.CA.CertPEM()))
	if err != nil {
		t.Fatal(err)
	}
	defer cl.Close()
	if got := strings.Join(cl.Pools(), ","); got != list {
		t.Fatalf("Pools() = %s, want %s", got, list)
	}

	// load runs callers until stop is closed and returns the calls made and
	// the errors met.
	type result struct {
		calls int64
		errs  []error
	}
	load := func(stop <-chan struct{}) func() result {
		var calls atomic.Int64
		var mu sync.Mutex
		var errs []error
		var wg sync.WaitGroup
		for g := range 6 {
			wg.Go(func() {
				for i := 0; ; i++ {
					select {
					case <-stop:
						return
					default:
					}
					var err error
					switch i % 3 {
					case 0:
						var out []byte
						out, err = cl.Call(ctx, "add", g, i)
						if err == nil && string(out) != fmt.Sprint(g+i) {
							err = fmt.Errorf("add %d %d = %s", g, i, out)
						}
					case 1:
						data := []byte(fmt.Sprintf("caller %d, file %d", g, i))
						var info *taskworker.FileInfo
						if info, err = cl.Push(ctx, "load.txt", data); err == nil {
							var got []byte
							if got, err = cl.Get(ctx, info.FileId); err == nil && !bytes.Equal(got, data) {
								err = fmt.Errorf("file %s reads back %q, want %q", info.FileId, got, data)
							}
						}
					default:
						_, err = cl.Workers(ctx)
					}
					calls.Add(1)
					if err != nil {
						mu.Lock()
						errs = append(errs, err)
						mu.Unlock()
					}
				}
			})
		}
		return func() result {
			wg.Wait()
			return result{calls.Load(), errs}
		}
	}

	// Pool 0 stopped gracefully mid-load: nothing fails.
	stop := make(chan struct{})
	wait := load(stop)
	time.Sleep(300 * time.Millisecond)
	sctx, scancel := context.WithTimeout(ctx, 30*time.Second)
	if err := c.Pools[0].Stop(sctx); err != nil {
		t.Fatalf("stopping pool 0: %v", err)
	}
	scancel()
	time.Sleep(300 * time.Millisecond)
	close(stop)
	if r := wait(); len(r.errs) != 0 || r.calls == 0 {
		t.Fatalf("pool 0 stopped gracefully: %d of %d calls failed; first: %v", len(r.errs), r.calls, r.errs)
	}

	// Started again, and the other one killed mid-load: calls in flight on
	// it may fail, as Unavailable whose outcome is unknown, never as
	// certainly not carried out. (A call made while the client had no
	// connection ready, its connection to the restarted pool still in
	// back-off, fails to dial: that one was never sent, and says so.)
	c.StartPool(0)
	c.WaitWorkers(3)
	stop = make(chan struct{})
	wait = load(stop)
	time.Sleep(300 * time.Millisecond)
	c.KillPool(1)
	close(stop)
	r := wait()
	for _, err := range r.errs {
		if status.Code(err) != codes.Unavailable || taskworker.NotCarriedOut(err) && !pools.NeverSent(err) {
			t.Errorf("a call in flight on the killed pool: %v (NotCarriedOut %v); want Unavailable, outcome unknown", err, taskworker.NotCarriedOut(err))
		}
	}
	t.Logf("pool 1 killed: %d of %d calls in flight failed", len(r.errs), r.calls)
	// Every call now goes to pool 0, the restarted one: waiting for a
	// ready pool, the client finds it.
	rpc := v1.NewRPCServiceClient(cl.Conn())
	for i := range 50 {
		cctx, ccancel := context.WithTimeout(ctx, 20*time.Second)
		resp, err := rpc.CallFunction(cctx, &v1.FunctionCallRequest{FunctionName: "add", Args: []byte(fmt.Sprintf("[%d, 1]", i))}, grpc.WaitForReady(true))
		ccancel()
		if err != nil || string(resp.GetResult()) != fmt.Sprint(i+1) {
			t.Fatalf("call %d with pool 1 dead: %v, %v", i, resp, err)
		}
	}
	for i := range 20 { // and without waiting, as Call does
		if _, err := cl.Call(ctx, "add", i, 1); err != nil {
			t.Fatalf("call %d with pool 1 dead: %v", i, err)
		}
	}
}

// What the client reports says whether a push may have been stored: a push
// no pool could be reached for was certainly not; one whose pool died
// while it streamed may have been.
func TestClientTellsWhetherAPushWasCarriedOut(t *testing.T) {
	c := cluster.New(t, cluster.Options{Workers: 3})
	ctx, cancel := context.WithTimeout(context.Background(), time.Minute)
	defer cancel()

	nowhere, err := taskworker.Dial("127.0.0.1:1,127.0.0.1:2", taskworker.WithToken(c.AdminToken), taskworker.WithCA(c.CA.CertPEM()))
	if err != nil {
		t.Fatal(err)
	}
	defer nowhere.Close()
	_, err = nowhere.Push(ctx, "never.txt", []byte("never stored"))
	if status.Code(err) != codes.Unavailable || !taskworker.NotCarriedOut(err) {
		t.Errorf("a push to no pool: %v, NotCarriedOut %v; want Unavailable, certainly not carried out", err, taskworker.NotCarriedOut(err))
	}

	// A write the pool refused before its commit says so, whatever its code.
	cl := c.Client(0)
	info, err := cl.Push(ctx, "v1.txt", []byte("version 1"))
	if err != nil {
		t.Fatal(err)
	}
	if _, err := cl.Revise(ctx, info.FileId, []byte("version 2"), 1); err != nil {
		t.Fatal(err)
	}
	_, err = cl.Revise(ctx, info.FileId, []byte("version 2 again"), 1)
	if status.Code(err) != codes.FailedPrecondition || !taskworker.NotCarriedOut(err) {
		t.Errorf("a revise of a version that moved on: %v, NotCarriedOut %v; want FailedPrecondition, certainly not carried out", err, taskworker.NotCarriedOut(err))
	}

	// An upload whose pool is killed after its first megabyte.
	sent := make(chan struct{})
	killed := make(chan struct{})
	r := io.MultiReader(bytes.NewReader(make([]byte, 1<<20)), &gate{before: sent, after: killed}, bytes.NewReader(make([]byte, 1<<20)))
	done := make(chan error, 1)
	go func() {
		_, err := c.Client(0).Upload(ctx, "cut.bin", r)
		done <- err
	}()
	<-sent
	c.KillPool(0)
	close(killed)
	err = <-done
	if status.Code(err) != codes.Unavailable || taskworker.NotCarriedOut(err) {
		t.Errorf("an upload whose pool died: %v, NotCarriedOut %v; want Unavailable, outcome unknown", err, taskworker.NotCarriedOut(err))
	}
}

// gate closes before when first read, and then waits for after before it
// reports the end of its (empty) part.
type gate struct {
	before, after chan struct{}
	once          sync.Once
}

func (g *gate) Read([]byte) (int, error) {
	g.once.Do(func() { close(g.before) })
	<-g.after
	return 0, io.EOF
}

// Each pool of a list is checked by the name its own address gives: pool 1
// listens on 127.0.0.2, which pool 0's certificate does not name, and the
// client, given 127.0.0.2 first, still verifies pool 0 as 127.0.0.1.
func TestClientChecksEachPoolByItsOwnName(t *testing.T) {
	c := cluster.New(t, cluster.Options{Pools: 2, Workers: 1, PoolConfig: func(i int, cfg *pool.Config) {
		if i == 1 && cfg.Listen == "127.0.0.1:0" {
			cfg.Listen = "127.0.0.2:0"
		}
	}})
	if !strings.HasPrefix(c.PoolAddr(1), "127.0.0.2:") {
		t.Fatalf("pool 1 listens on %s", c.PoolAddr(1))
	}
	ctx, cancel := context.WithTimeout(context.Background(), time.Minute)
	defer cancel()
	cl, err := taskworker.Dial(c.PoolAddr(1)+","+c.PoolAddr(0), taskworker.WithToken(c.AdminToken), taskworker.WithCA(c.CA.CertPEM()))
	if err != nil {
		t.Fatal(err)
	}
	defer cl.Close()
	admin := v1.NewAdminServiceClient(cl.Conn())
	// With one pool stopped, every call goes to the other; waiting for a
	// ready pool, a call fails only if that pool is refused.
	for _, only := range []int{0, 1} {
		c.KillPool(1 - only)
		for range 5 {
			cctx, ccancel := context.WithTimeout(ctx, 10*time.Second)
			_, err := admin.ListWorkers(cctx, &v1.ListWorkersRequest{}, grpc.WaitForReady(true))
			ccancel()
			if err != nil {
				t.Fatalf("only pool %d (%s) up: %v", only, c.PoolAddr(only), err)
			}
		}
		c.StartPool(1 - only)
	}
}

// A worker given a list of pools, the first of which is down, enrols,
// registers and serves calls through the one that answers; one given a
// list with an empty entry is refused at New, saying why.
func TestWorkerTakesAPoolList(t *testing.T) {
	c := cluster.New(t, cluster.Options{Workers: 1})
	ctx, cancel := context.WithTimeout(context.Background(), time.Minute)
	defer cancel()
	list := "127.0.0.1:1," + c.PoolAddr(0)
	w, err := taskworker.New("listed", taskworker.WithPool(list, c.JoinToken), taskworker.WithPoolCA(c.CA.CertPEM()))
	if err != nil {
		t.Fatal(err)
	}
	if err := w.Function("triple", func(x int) int { return 3 * x }); err != nil {
		t.Fatal(err)
	}
	if err := w.Start(ctx, "127.0.0.1:0"); err != nil {
		t.Fatal(err)
	}
	defer w.Stop(ctx)
	if err := w.WaitRegistered(ctx); err != nil {
		t.Fatal(err)
	}
	cl, err := taskworker.Dial(list, taskworker.WithToken(c.AdminToken), taskworker.WithCA(c.CA.CertPEM()))
	if err != nil {
		t.Fatal(err)
	}
	defer cl.Close()
	if out, err := cl.Call(ctx, "triple", 14); err != nil || string(out) != "42" {
		t.Fatalf("triple 14 through the list: %s, %v", out, err)
	}

	_, err = taskworker.New("badlist", taskworker.WithPool(c.PoolAddr(0)+",", c.JoinToken), taskworker.WithPoolCA(c.CA.CertPEM()))
	if err == nil || !strings.Contains(err.Error(), "entry 2 is empty") {
		t.Errorf("New with a pool list ending in a comma: %v", err)
	}
}
