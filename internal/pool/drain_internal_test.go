package pool

import (
	"encoding/json"
	"log/slog"
	"testing"
	"time"

	"google.golang.org/grpc"
	"google.golang.org/grpc/credentials/insecure"

	v1 "github.com/hivemind/taskworker/api/taskworker/v1"
	"github.com/hivemind/taskworker/internal/etcdwatch"
)

// A drained worker that leaves loses its registration and its drain with
// the same lease, but the two come through separate watches, in either
// order. Whatever the order, and until a new registration, the route table
// never offers the leaving worker; an undo, though, makes it routable again.
func TestDrainedWorkerStaysOutUntilItsRegistrationGoes(t *testing.T) {
	const prefix = "/tw/"
	reg := func(lease int64) etcdwatch.KV {
		rec, err := encodeRecord(&v1.WorkerInfo{WorkerId: "worker_002", Address: "127.0.0.1:1", LeaseId: lease,
			Functions: []*v1.FunctionSpec{{Name: "sleep"}}})
		if err != nil {
			t.Fatal(err)
		}
		return etcdwatch.KV{Key: prefix + "workers/worker_002", Value: []byte(rec)}
	}
	drain := func(d drainRecord) etcdwatch.KV {
		b, _ := json.Marshal(d)
		return etcdwatch.KV{Key: prefix + "drains/worker_002", Value: b}
	}
	gone := func(kind string) []etcdwatch.KV { return []etcdwatch.KV{{Key: prefix + kind + "/worker_002"}} }
	d := drainRecord{ID: "d1", Lease: 7, StartedMs: 1, DeadlineMs: time.Now().Add(time.Hour).UnixMilli()}
	undone := d
	undone.Undone = true

	type step struct {
		name     string
		apply    func(r *registry)
		routable bool
	}
	workers := func(kvs ...etcdwatch.KV) func(*registry) {
		return func(r *registry) { r.apply(kvs, false, 0) }
	}
	drains := func(kvs ...etcdwatch.KV) func(*registry) {
		return func(r *registry) { r.applyDrains(kvs, false, 0) }
	}
	for _, tc := range []struct {
		name  string
		steps []step
		// drained: the drain still recorded, for its carrying out
		// (stillDrained), after the last step.
		drained bool
	}{
		{"drain goes first", []step{
			{"registered", workers(reg(7)), true},
			{"drained", drains(drain(d)), false},
			{"drain's key gone with the lease", drains(gone("drains")...), false},
			{"registration gone", workers(gone("workers")...), false},
			{"registered again", workers(reg(8)), true},
		}, false},
		{"registration goes first", []step{
			{"registered", workers(reg(7)), true},
			{"drained", drains(drain(d)), false},
			{"registration gone", workers(gone("workers")...), false},
			{"drain's key gone with the lease", drains(gone("drains")...), false},
			{"registered again", workers(reg(8)), true},
		}, false},
		{"a watch restarts without the drain", []step{
			{"registered", workers(reg(7)), true},
			{"drained", drains(drain(d)), false},
			{"drains reloaded, none left", func(r *registry) { r.applyDrains(nil, true, 0) }, false},
			{"registered again", workers(reg(8)), true},
		}, false},
		{"undone", []step{
			{"registered", workers(reg(7)), true},
			{"drained", drains(drain(d)), false},
			{"undone", drains(drain(undone)), true},
		}, false},
		{"a new registration is not drained by the old drain", []step{
			{"registered", workers(reg(7)), true},
			{"drained", drains(drain(d)), false},
			{"registered again", workers(reg(8)), true},
			{"old drain's key gone", drains(gone("drains")...), true},
		}, false},
		{"restarted at the same address, the old drain's key seen gone first", []step{
			{"registered", workers(reg(7)), true},
			{"drained", drains(drain(d)), false},
			{"old drain's key gone with the old lease", drains(gone("drains")...), false},
			{"registered again under a new lease", workers(reg(8)), true},
		}, false},
		{"drained, still registered", []step{
			{"registered", workers(reg(7)), true},
			{"drained", drains(drain(d)), false},
			{"drain's key gone with the lease", drains(gone("drains")...), false},
		}, true},
	} {
		t.Run(tc.name, func(t *testing.T) {
			r := newRegistry(nil, prefix, time.Minute, slog.New(slog.DiscardHandler))
			r.dial = func(string, string) (*grpc.ClientConn, error) {
				return grpc.NewClient("passthrough:///unused", grpc.WithTransportCredentials(insecure.NewCredentials()))
			}
			t.Cleanup(func() {
				for _, w := range r.workers {
					w.conn.Close()
				}
			})
			for _, s := range tc.steps {
				s.apply(r)
				if got := len(r.routes("sleep")) > 0; got != s.routable {
					t.Errorf("after %q: routable %v, want %v", s.name, got, s.routable)
				}
			}
			if got := r.stillDrained("worker_002", d); got != tc.drained {
				t.Errorf("drain still carried out: %v, want %v", got, tc.drained)
			}
		})
	}
}
