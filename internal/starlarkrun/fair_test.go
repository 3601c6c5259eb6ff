package starlarkrun

import (
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"sync"
	"testing"
	"time"

	"github.com/hivemind/taskworker/internal/childproc"
)

// TestFloodDelaysOnlyTheFlooder floods a pool of real children with
// spinning calls of one caller, many more than the children, each allowed
// to spin far longer than the other caller's calls are allowed to wait:
// the other caller's calls still succeed, each in a child of its own that
// the flood cannot take; the flood holds at most its share, and its extra
// calls wait.
func TestFloodDelaysOnlyTheFlooder(t *testing.T) {
	cfg := testConfig(t)
	cfg.MaxChildren = 4
	p := newPool(t, cfg)
	share := childproc.DefaultPerTenant(cfg.MaxChildren)

	flood, stop := context.WithCancel(context.Background())
	var wg sync.WaitGroup
	defer func() {
		stop()
		wg.Wait()
	}()
	const floodCalls = 12
	for range floodCalls {
		wg.Go(func() {
			_, err := p.Call(flood, Request{
				Name: "spin.star", Source: []byte(loopForever), Function: "f",
				Limits: Limits{Timeout: 5 * time.Minute}, Tenant: "eve", Caller: "eve",
			})
			if !errors.Is(err, ErrCanceled) && !errors.Is(err, ErrBusy) {
				t.Errorf("a flood call ended with %v, want it canceled", err)
			}
		})
	}
	// The flood holds all it may (all children but one, at most one per
	// CPU) and the rest of it waits.
	deadline := time.Now().Add(time.Minute)
	for st := p.Stats(); st.Waiting != floodCalls-share; st = p.Stats() {
		if time.Now().After(deadline) {
			t.Fatalf("the flood did not settle: %+v", st)
		}
		time.Sleep(10 * time.Millisecond)
	}
	for i := range 5 {
		// The flood's calls spin for minutes: bob's call succeeds only if
		// it does not wait for one of them.
		ctx, cancel := context.WithTimeout(context.Background(), 30*time.Second)
		out, err := p.Call(ctx, Request{
			Name: "add.star", Source: []byte(addScript), Function: "add",
			Args: json.RawMessage(fmt.Sprintf("[%d, 1]", i)), Tenant: "bob", Caller: "bob",
		})
		cancel()
		if err != nil || string(out) != fmt.Sprint(i+1) {
			t.Fatalf("bob's call %d under the flood: %s, %v", i, out, err)
		}
	}
	if st := p.Stats(); st.Alive > cfg.MaxChildren || st.Waiting != floodCalls-share {
		t.Fatalf("stats %+v: want at most %d alive, the flood's extra calls waiting", st, cfg.MaxChildren)
	}
	if held := p.sup.Held("eve"); held != share {
		t.Fatalf("the flood holds %d children, want %d", held, share)
	}
}

// TestCallerCap: a caller cap of all the children lets one caller take
// them all, as before fair sharing, when the operator asks for it.
func TestCallerCap(t *testing.T) {
	cfg := testConfig(t)
	cfg.MaxChildren = 2
	cfg.MaxChildrenPerCaller = 2
	p := newPool(t, cfg)
	ctx, stop := context.WithCancel(context.Background())
	var wg sync.WaitGroup
	for range 2 {
		wg.Go(func() {
			_, _ = p.Call(ctx, Request{Source: []byte(loopForever), Function: "f", Caller: "eve"})
		})
	}
	for p.sup.Held("eve") != 2 {
		time.Sleep(10 * time.Millisecond)
	}
	stop()
	wg.Wait()
}
