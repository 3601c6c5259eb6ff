package pool

import (
	"context"
	"fmt"
	"testing"
	"time"

	"google.golang.org/grpc/codes"
	"google.golang.org/grpc/status"

	v1 "github.com/hivemind/taskworker/api/taskworker/v1"
	"github.com/hivemind/taskworker/internal/quota"
)

func fakeRoutes(n int) []route {
	rs := make([]route, n)
	for i := range rs {
		w := &worker{id: fmt.Sprintf("w%d", i)}
		w.info.Store(&v1.WorkerInfo{WorkerId: w.id})
		rs[i] = route{w: w, spec: &v1.FunctionSpec{Name: "f"}}
	}
	return rs
}

func TestPickPrefersFewerOutstanding(t *testing.T) {
	rs := fakeRoutes(2)
	rs[0].w.outstanding.Store(5)
	for range 100 {
		if r, _ := pick(rs, nil, time.Now(), "", nil); r.w != rs[1].w {
			t.Fatal("picked the busier of two workers")
		}
	}
}

func TestPickSkipsTriedAndSuspect(t *testing.T) {
	now := time.Now()
	rs := fakeRoutes(3)
	rs[1].w.suspectUntil.Store(now.Add(time.Second).UnixNano())
	for range 100 {
		r, ok := pick(rs, []*worker{rs[0].w}, now, "", nil)
		if !ok || r.w != rs[2].w {
			t.Fatalf("picked %v; want w2 (w0 tried, w1 suspect)", r.w.id)
		}
	}
	// With nothing else left, a suspect worker is still tried.
	if r, ok := pick(rs, []*worker{rs[0].w, rs[2].w}, now, "", nil); !ok || r.w != rs[1].w {
		t.Fatalf("picked %v, %v; want the suspect w1 as a last resort", r.w, ok)
	}
	if _, ok := pick(rs, []*worker{rs[0].w, rs[1].w, rs[2].w}, now, "", nil); ok {
		t.Fatal("picked a worker when all were tried")
	}
}

func TestPickSpreadsLoad(t *testing.T) {
	rs := fakeRoutes(4)
	counts := map[string]int{}
	for range 4000 {
		r, _ := pick(rs, nil, time.Now(), "", nil)
		counts[r.w.id]++
	}
	for id, n := range counts {
		if n < 600 {
			t.Errorf("%s picked %d of 4000 times with equal load: %v", id, n, counts)
		}
	}
}

func BenchmarkPick(b *testing.B) {
	for _, n := range []int{3, 100} {
		b.Run(fmt.Sprint(n), func(b *testing.B) {
			rs := fakeRoutes(n)
			now := time.Now()
			b.ReportAllocs()
			for b.Loop() {
				r, _ := pick(rs, nil, now, "", nil)
				r.w.outstanding.Add(1)
				r.w.outstanding.Add(-1)
			}
		})
	}
}

func TestPickPrefersCompiled(t *testing.T) {
	rs := fakeRoutes(2)
	rs[1].w.info.Store(&v1.WorkerInfo{WorkerId: "w1", CompiledModules: []string{"m"}})
	for range 100 {
		if r, _ := pick(rs, nil, time.Now(), "m", nil); r.w != rs[1].w {
			t.Fatal("picked the worker without the module compiled")
		}
	}
	// ...until the warm one is coldPenalty calls busier.
	rs[1].w.outstanding.Store(coldPenalty + 1)
	if r, _ := pick(rs, nil, time.Now(), "m", nil); r.w != rs[0].w {
		t.Fatal("kept piling calls on the warm worker")
	}
}

// TestPickSticksToWarm checks that a deployed function's calls stay on the
// worker that served it last while it is no busier than the other choice,
// and move when it is.
func TestPickSticksToWarm(t *testing.T) {
	rs := fakeRoutes(3)
	warm := rs[2].w
	for range 100 {
		if r, _ := pick(rs, nil, time.Now(), "m", warm); r.w != warm {
			t.Fatal("left the warm worker while every worker was idle")
		}
	}
	warm.outstanding.Store(1)
	moved := 0
	for range 100 {
		if r, _ := pick(rs, nil, time.Now(), "m", warm); r.w != warm {
			moved++
		}
	}
	if moved != 100 {
		t.Fatalf("the warm worker, busier than both others, still got %d of 100 calls", 100-moved)
	}
	// A warm worker that was tried already, or is gone, is not chosen.
	if r, _ := pick(rs, []*worker{warm}, time.Now(), "m", warm); r.w == warm {
		t.Fatal("picked the warm worker after it failed")
	}
	gone := fakeRoutes(1)[0].w
	if _, ok := pick(rs, nil, time.Now(), "m", gone); !ok {
		t.Fatal("no pick when the warm worker has left")
	}
}

func TestCallCounts(t *testing.T) {
	limits := map[string]quota.Limits{"dave": {Calls: 2}}
	quotas := func(_ context.Context, user string) (quota.Limits, error) { return limits[user], nil }
	var c callCounts
	ctx := context.Background()
	steps := []struct {
		user    string
		release bool
		counted bool
		code    codes.Code
	}{
		{user: "dave", counted: true},
		{user: "dave", counted: true},
		{user: "dave", code: codes.ResourceExhausted},
		{user: "bob"}, // no Calls quota: not counted
		{user: "dave", release: true},
		{user: "dave", counted: true},
		{user: "dave", code: codes.ResourceExhausted},
	}
	for i, s := range steps {
		if s.release {
			c.release(s.user)
			continue
		}
		_, counted, err := c.acquire(ctx, quotas, s.user)
		if counted != s.counted || status.Code(err) != s.code {
			t.Fatalf("step %d (%s): counted %v, %v; want %v, %v", i, s.user, counted, err, s.counted, s.code)
		}
	}
	if _, counted, err := c.acquire(ctx, nil, "dave"); counted || err != nil {
		t.Errorf("without quotas: counted %v, %v", counted, err)
	}
}
