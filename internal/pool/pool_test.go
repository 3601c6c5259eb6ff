package pool_test

import (
	"context"
	"strings"
	"sync"
	"sync/atomic"
	"testing"
	"time"

	"google.golang.org/grpc/codes"
	"google.golang.org/grpc/metadata"
	"google.golang.org/grpc/status"

	v1 "github.com/hivemind/taskworker/api/taskworker/v1"
	"github.com/hivemind/taskworker/internal/cluster"
	"github.com/hivemind/taskworker/internal/examples"
	"github.com/hivemind/taskworker/internal/worker"
)

func ctxTimeout(t *testing.T, d time.Duration) context.Context {
	ctx, cancel := context.WithTimeout(context.Background(), d)
	t.Cleanup(cancel)
	return ctx
}

func TestCallIsBalancedAcrossWorkers(t *testing.T) {
	c := cluster.New(t, cluster.Options{Workers: 3})
	rpc := v1.NewRPCServiceClient(c.Client(0).Conn())
	ctx := ctxTimeout(t, 30*time.Second)
	served := map[string]int{}
	var mu sync.Mutex
	var wg sync.WaitGroup
	for range 8 {
		wg.Go(func() {
			for range 40 {
				resp, err := rpc.CallFunction(ctx, &v1.FunctionCallRequest{FunctionName: "add", Args: []byte("[1, 2]")})
				if err != nil {
					t.Error(err)
					return
				}
				if string(resp.Result) != "3" {
					t.Errorf("add(1, 2) = %s", resp.Result)
				}
				mu.Lock()
				served[resp.WorkerId]++
				mu.Unlock()
			}
		})
	}
	wg.Wait()
	if len(served) != 3 {
		t.Errorf("calls went to %v; want all three workers used", served)
	}
	for id, n := range served {
		if n < 20 {
			t.Errorf("worker %s served only %d of 320 calls: %v", id, n, served)
		}
	}
}

func TestBadInput(t *testing.T) {
	c := cluster.New(t, cluster.Options{Workers: 1})
	ctx := ctxTimeout(t, 30*time.Second)
	alice, err := c.Client(0).CreateToken(ctx, "alice", "test")
	if err != nil {
		t.Fatal(err)
	}
	conn := c.PoolConn(0)
	rpc := v1.NewRPCServiceClient(conn)
	admin := v1.NewAdminServiceClient(conn)
	withToken := func(tok string) context.Context {
		return metadata.AppendToOutgoingContext(ctx, "authorization", "Bearer "+tok)
	}
	call := func(tok, fn, args, user string) error {
		_, err := rpc.CallFunction(withToken(tok), &v1.FunctionCallRequest{FunctionName: fn, Args: []byte(args), UserId: user})
		return err
	}
	tests := []struct {
		name string
		err  error
		code codes.Code
		msg  string
	}{
		{"malformed JSON", call(alice, "add", "[1,", ""), codes.InvalidArgument, "arguments must be a JSON array"},
		{"wrong arity", call(alice, "add", "[1]", ""), codes.InvalidArgument, "takes 2 arguments (float64, float64), got 1"},
		{"wrong type", call(alice, "add", `[1, "x"]`, ""), codes.InvalidArgument, "argument 2 (float64)"},
		{"unknown function", call(alice, "nope", "[]", ""), codes.NotFound, `no function "nope"`},
		{"invalid function name", call(alice, "..", "[]", ""), codes.InvalidArgument, "function name \"..\": use 1 to 200 letters"},
		{"invalid owner", call(alice, "../etc", "[]", ""), codes.InvalidArgument, "user \"..\": use 1 to 128 letters"},
		{"a name with two slashes", call(alice, "bob/reports/daily", "[]", ""), codes.InvalidArgument, "function name \"reports/daily\": use 1 to 200 letters"},
		{"empty function name", call(alice, "", "[]", ""), codes.InvalidArgument, "no function_name"},
		{"missing token", func() error {
			_, err := rpc.CallFunction(ctx, &v1.FunctionCallRequest{FunctionName: "add"})
			return err
		}(), codes.Unauthenticated, "no API token"},
		{"malformed token", call("hunter2", "add", "[1,2]", ""), codes.Unauthenticated, "malformed API token"},
		{"unknown token", call("tw_"+strings.Repeat("A", 43), "add", "[1,2]", ""), codes.Unauthenticated, "not recognised"},
		{"other user's user_id", call(alice, "add", "[1,2]", "bob"), codes.PermissionDenied, `user_id "bob" does not match the token's user "alice"`},
		{"admin acting for a user with a bad name", call(c.AdminToken, "add", "[1,2]", "bob/../eve"), codes.InvalidArgument, `user_id: user "bob/../eve"`},
		{"join token calls a function", call(c.JoinToken, "add", "[1,2]", ""), codes.PermissionDenied, "role worker cannot call this"},
		{"user creates a token", func() error {
			_, err := admin.CreateToken(withToken(alice), &v1.CreateTokenRequest{User: "mallory"})
			return err
		}(), codes.PermissionDenied, "use a token with role admin"},
		{"args over the limit", call(alice, "echo", `["`+strings.Repeat("x", 5<<20)+`"]`, ""), codes.ResourceExhausted, "the pool accepts at most"},
		{"message over the limit", call(alice, "echo", `["`+strings.Repeat("x", 17<<20)+`"]`, ""), codes.ResourceExhausted, "larger than max"},
		{"user with a bad name", func() error {
			_, err := admin.CreateToken(withToken(c.AdminToken), &v1.CreateTokenRequest{User: "a b"})
			return err
		}(), codes.InvalidArgument, `user "a b"`},
		{"another user's file", func() error {
			_, err := v1.NewFileServiceClient(conn).Get(withToken(alice), &v1.GetRequest{FileId: "aaaaaaaaaaaaaaaaaaaaaaaaaa"})
			return err
		}(), codes.NotFound, "no file"},
		{"not a file id", func() error {
			_, err := v1.NewFileServiceClient(conn).Get(withToken(alice), &v1.GetRequest{FileId: "../../x"})
			return err
		}(), codes.InvalidArgument, "file id \"../../x\": a file id is 26 characters"},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			st := status.Convert(tt.err)
			if st.Code() != tt.code || !strings.Contains(st.Message(), tt.msg) {
				t.Errorf("got %s %q; want %s containing %q", st.Code(), st.Message(), tt.code, tt.msg)
			}
		})
	}
	// The right user_id and an admin acting for a user are fine.
	if err := call(alice, "add", "[1,2]", "alice"); err != nil {
		t.Errorf("own user_id: %v", err)
	}
	if err := call(c.AdminToken, "add", "[1,2]", "alice"); err != nil {
		t.Errorf("admin for alice: %v", err)
	}
}

// slowSetup registers the examples plus "slow" (idempotent) and "charge"
// (not idempotent), which block until released or cancelled.
func slowSetup(started chan<- string) func(w *worker.Server) error {
	return func(w *worker.Server) error {
		if err := examples.Register(w.Register); err != nil {
			return err
		}
		block := func(ctx context.Context, ms int) (string, error) {
			select {
			case started <- w.ID():
			default:
			}
			select {
			case <-time.After(time.Duration(ms) * time.Millisecond):
				return w.ID(), nil
			case <-ctx.Done():
				return "", ctx.Err()
			}
		}
		if err := w.Register("slow", block, true); err != nil {
			return err
		}
		return w.Register("charge", block, false)
	}
}

func TestKilledWorkerIdempotentCallIsRetried(t *testing.T) {
	started := make(chan string, 1)
	c := cluster.New(t, cluster.Options{Workers: 3, Setup: slowSetup(started)})
	cl := c.Client(0)
	ctx := ctxTimeout(t, 30*time.Second)
	result := make(chan error, 1)
	go func() {
		_, err := cl.Call(ctx, "slow", 500)
		result <- err
	}()
	victim := <-started
	for i, w := range c.Workers {
		if w.ID() == victim {
			c.KillWorker(i)
		}
	}
	if err := <-result; err != nil {
		t.Fatalf("slow call whose worker died: %v; want it retried elsewhere", err)
	}
	c.WaitWorkers(2)
}

func TestKilledWorkerOtherCallHasUnknownOutcome(t *testing.T) {
	started := make(chan string, 1)
	c := cluster.New(t, cluster.Options{Workers: 2, Setup: slowSetup(started)})
	cl := c.Client(0)
	ctx := ctxTimeout(t, 30*time.Second)
	result := make(chan error, 1)
	go func() {
		_, err := cl.Call(ctx, "charge", 5000)
		result <- err
	}()
	victim := <-started
	for i, w := range c.Workers {
		if w.ID() == victim {
			c.KillWorker(i)
		}
	}
	err := <-result
	if st := status.Convert(err); st.Code() != codes.Unavailable || !strings.Contains(st.Message(), "outcome is unknown") {
		t.Fatalf("got %v; want Unavailable saying the outcome is unknown", err)
	}
	c.WaitWorkers(1)
}

func TestNoLiveWorker(t *testing.T) {
	c := cluster.New(t, cluster.Options{Workers: 1})
	cl := c.Client(0)
	ctx := ctxTimeout(t, 30*time.Second)
	c.KillWorker(0)
	// Until the lease expires the pool still knows the worker, but cannot
	// reach it; then the function is gone.
	_, err := cl.Call(ctx, "add", 1, 2)
	if code := status.Code(err); code != codes.Unavailable {
		t.Fatalf("call right after the only worker died: %v; want Unavailable", err)
	}
	c.WaitWorkers(0)
	if _, err := cl.Call(ctx, "add", 1, 2); status.Code(err) != codes.NotFound {
		t.Fatalf("call after the lease expired: %v; want NotFound", err)
	}
}

func TestDeadlineReachesTheFunction(t *testing.T) {
	c := cluster.New(t, cluster.Options{Workers: 1})
	cl := c.Client(0)
	ctx, cancel := context.WithTimeout(context.Background(), 200*time.Millisecond)
	defer cancel()
	_, err := cl.Call(ctx, "sleep", 10_000)
	if status.Code(err) != codes.DeadlineExceeded {
		t.Fatalf("got %v; want DeadlineExceeded", err)
	}
	// The worker saw the deadline: its call ends, rather than sleeping on.
	deadline := time.Now().Add(5 * time.Second)
	for c.Workers[0].Inflight() != 0 {
		if time.Now().After(deadline) {
			t.Fatal("the worker is still running the call after its deadline")
		}
		time.Sleep(10 * time.Millisecond)
	}
}

func TestStoppedWorkerFinishesItsCalls(t *testing.T) {
	started := make(chan string, 1)
	c := cluster.New(t, cluster.Options{Workers: 1, Setup: slowSetup(started)})
	cl := c.Client(0)
	ctx := ctxTimeout(t, 30*time.Second)
	result := make(chan error, 1)
	go func() {
		_, err := cl.Call(ctx, "charge", 300)
		result <- err
	}()
	<-started
	c.StopWorker(0)
	if err := <-result; err != nil {
		t.Fatalf("a call in flight when its worker stopped gracefully: %v", err)
	}
	c.WaitWorkers(0) // deregistered at once, not after the lease
}

func TestTwoPoolsOverOneEtcd(t *testing.T) {
	c := cluster.New(t, cluster.Options{Pools: 2, Workers: 2})
	ctx := ctxTimeout(t, 30*time.Second)
	// worker_001 registered through pool 0, worker_002 through pool 1.
	for p := range 2 {
		rpc := v1.NewRPCServiceClient(c.Client(p).Conn())
		seen := map[string]bool{}
		for range 50 {
			resp, err := rpc.CallFunction(ctx, &v1.FunctionCallRequest{FunctionName: "add", Args: []byte("[2, 2]")})
			if err != nil {
				t.Fatalf("pool %d: %v", p, err)
			}
			seen[resp.WorkerId] = true
		}
		if len(seen) != 2 {
			t.Errorf("pool %d routed only to %v; want both workers", p, seen)
		}
	}
	// A token made through one pool works on the other.
	tok, err := c.Client(0).CreateToken(ctx, "carol", "")
	if err != nil {
		t.Fatal(err)
	}
	if _, err := c.ClientWithToken(1, tok).Call(ctx, "hello"); err != nil {
		t.Errorf("token from pool 0 on pool 1: %v", err)
	}
}

func TestPoolRestartWorkersComeBack(t *testing.T) {
	c := cluster.New(t, cluster.Options{Workers: 2})
	ctx := ctxTimeout(t, 60*time.Second)
	var ok, failed atomic.Int64
	stop := make(chan struct{})
	var wg sync.WaitGroup
	for range 4 {
		wg.Go(func() {
			cl := c.Client(0)
			for {
				select {
				case <-stop:
					return
				default:
				}
				cctx, cancel := context.WithTimeout(ctx, time.Second)
				if _, err := cl.Call(cctx, "add", 1, 1); err != nil {
					failed.Add(1)
				} else {
					ok.Add(1)
				}
				cancel()
			}
		})
	}
	time.Sleep(200 * time.Millisecond)
	c.KillPool(0)
	time.Sleep(3 * time.Second) // longer than the lease: the workers' leases lapse
	c.StartPool(0)
	c.WaitWorkers(2)
	before := ok.Load()
	deadline := time.Now().Add(10 * time.Second)
	for ok.Load() < before+100 {
		if time.Now().After(deadline) {
			t.Fatalf("calls did not resume after the pool restarted: %d more succeeded", ok.Load()-before)
		}
		time.Sleep(20 * time.Millisecond)
	}
	close(stop)
	wg.Wait()
	t.Logf("%d calls succeeded, %d failed while the pool was down", ok.Load(), failed.Load())
}

func TestFunctionAddedAfterStart(t *testing.T) {
	c := cluster.New(t, cluster.Options{Workers: 1})
	cl := c.Client(0)
	ctx := ctxTimeout(t, 30*time.Second)
	if err := c.Workers[0].Register("late", func() string { return "here" }, false); err != nil {
		t.Fatal(err)
	}
	deadline := time.Now().Add(10 * time.Second)
	for {
		out, err := cl.Call(ctx, "late")
		if err == nil {
			if string(out) != `"here"` {
				t.Fatalf("late() = %s", out)
			}
			break
		}
		if status.Code(err) != codes.NotFound || time.Now().After(deadline) {
			t.Fatalf("a function added after Start: %v", err)
		}
		time.Sleep(20 * time.Millisecond)
	}
	// Its old functions still work.
	if _, err := cl.Call(ctx, "add", 1, 2); err != nil {
		t.Fatal(err)
	}
}

// Calls with small arguments share each worker's call stream; larger ones
// go as calls of their own. Both arrive intact.
func TestSmallAndLargeCalls(t *testing.T) {
	c := cluster.New(t, cluster.Options{Workers: 2})
	cl := c.Client(0)
	ctx := ctxTimeout(t, 30*time.Second)
	for _, n := range []int{0, 10, 64 << 10, 200 << 10, 3 << 20} {
		s := strings.Repeat("z", n)
		out, err := cl.Call(ctx, "echo", s)
		if err != nil || string(out) != `"`+s+`"` {
			t.Fatalf("echo of %d bytes: %d bytes back, %v", n, len(out), err)
		}
	}
	// A call abandoned by its caller ends on the worker too.
	cctx, cancel := context.WithCancel(ctx)
	go func() {
		time.Sleep(100 * time.Millisecond)
		cancel()
	}()
	if _, err := cl.Call(cctx, "sleep", 10_000); status.Code(err) != codes.Canceled {
		t.Fatalf("a cancelled call: %v", err)
	}
	deadline := time.Now().Add(5 * time.Second)
	for c.Workers[0].Inflight()+c.Workers[1].Inflight() != 0 {
		if time.Now().After(deadline) {
			t.Fatal("the worker still runs a call its caller cancelled")
		}
		time.Sleep(10 * time.Millisecond)
	}
}

// TestCallAnswerAsTheWorkerSentIt: the pool forwards a worker's answer
// without decoding it, and adds result_json to it only for a call made
// with args_json; the tasks' own calls, which decode it, are in package
// tasks' tests.
func TestCallAnswerAsTheWorkerSentIt(t *testing.T) {
	c := cluster.New(t, cluster.Options{Workers: 2})
	ctx := metadata.AppendToOutgoingContext(ctxTimeout(t, 30*time.Second), "authorization", "Bearer "+c.AdminToken)
	rpc := v1.NewRPCServiceClient(c.PoolConn(0))
	tests := []struct {
		name     string
		req      *v1.FunctionCallRequest
		result   string
		withJSON bool
	}{
		{"args", &v1.FunctionCallRequest{FunctionName: "add", Args: []byte("[1, 2]")}, "3", false},
		{"args_json", &v1.FunctionCallRequest{FunctionName: "add", ArgsJson: "[2, 2]"}, "4", true},
		{"large args, a call of its own", &v1.FunctionCallRequest{FunctionName: "echo",
			Args: []byte(`["` + strings.Repeat("x", 100<<10) + `"]`)}, `"` + strings.Repeat("x", 100<<10) + `"`, false},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			resp, err := rpc.CallFunction(ctx, tt.req)
			if err != nil {
				t.Fatal(err)
			}
			if string(resp.Result) != tt.result || !strings.HasPrefix(resp.WorkerId, "worker") {
				t.Errorf("got result %.40q from %q; want %.40q from a worker", resp.Result, resp.WorkerId, tt.result)
			}
			if want := map[bool]string{true: tt.result}[tt.withJSON]; resp.ResultJson != want {
				t.Errorf("result_json %.40q; want %.40q", resp.ResultJson, want)
			}
		})
	}
}
