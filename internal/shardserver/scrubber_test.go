package shardserver_test

import (
	"context"
	"errors"
	"maps"
	"slices"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/hivemind/taskworker/internal/shardserver"
	"github.com/hivemind/taskworker/internal/shardstore"
)

func openStore(t *testing.T) (*shardstore.Store, string) {
	t.Helper()
	dir := t.TempDir()
	s, err := shardstore.Open(shardstore.DefaultConfig(dir))
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { s.Close() })
	return s, dir
}

// reports records what RunScrubber reports, failing the first `failures` calls.
type reports struct {
	mu       sync.Mutex
	failures int
	calls    int
	batches  [][]shardstore.Key
	got      map[shardstore.Key]bool
}

func (r *reports) report(_ context.Context, keys []shardstore.Key) error {
	r.mu.Lock()
	defer r.mu.Unlock()
	r.calls++
	if r.calls <= r.failures {
		return errors.New("pool unreachable")
	}
	r.batches = append(r.batches, keys)
	for _, k := range keys {
		r.got[k] = true
	}
	return nil
}

func (r *reports) keys() []string {
	r.mu.Lock()
	defer r.mu.Unlock()
	var out []string
	for k := range maps.Keys(r.got) {
		out = append(out, k.String())
	}
	slices.Sort(out)
	return out
}

func TestRunScrubber(t *testing.T) {
	t.Parallel()
	for _, tc := range []struct {
		name     string
		corrupt  []shardstore.Key
		expected []shardstore.Key // ScrubberOptions.Expected beyond the shards put
		batch    int
		failures int
		want     []string
	}{
		{name: "one corrupt shard", corrupt: []shardstore.Key{key("f1", "w1", 0, 1)}, want: []string{"f1/w1/0.1"}},
		{name: "batches of two", batch: 2,
			corrupt: []shardstore.Key{key("f1", "w1", 0, 0), key("f1", "w1", 0, 1), key("f1", "w1", 1, 0), key("f2", "w1", 0, 0), key("f2", "w1", 0, 1)},
			want:    []string{"f1/w1/0.0", "f1/w1/0.1", "f1/w1/1.0", "f2/w1/0.0", "f2/w1/0.1"}},
		{name: "reports fail, then succeed", failures: 3, corrupt: []shardstore.Key{key("f2", "w1", 0, 1)}, want: []string{"f2/w1/0.1"}},
		{name: "an expected shard missing", expected: []shardstore.Key{key("f3", "w9", 4, 2)}, want: []string{"f3/w9/4.2"}},
	} {
		t.Run(tc.name, func(t *testing.T) {
			t.Parallel()
			store, dir := openStore(t)
			ctx := context.Background()
			all := []shardstore.Key{key("f1", "w1", 0, 0), key("f1", "w1", 0, 1), key("f1", "w1", 1, 0), key("f2", "w1", 0, 0), key("f2", "w1", 0, 1)}
			for i, k := range all {
				if _, err := store.Put(ctx, k, strings.NewReader(string(payload(uint64(i), 500)))); err != nil {
					t.Fatal(err)
				}
			}
			for _, k := range tc.corrupt {
				corrupt(t, dir, k)
			}
			r := &reports{failures: tc.failures, got: map[shardstore.Key]bool{}}
			ctx, cancel := context.WithCancel(ctx)
			done := make(chan error, 1)
			go func() {
				done <- shardserver.RunScrubber(ctx, store, r.report, shardserver.ScrubberOptions{
					BatchSize:     tc.batch,
					FlushInterval: 10 * time.Millisecond,
					Expected:      slices.Values(append(slices.Clone(all), tc.expected...)),
				})
			}()
			eventually(t, "the damaged shards are reported", func() (bool, error) {
				return len(r.keys()) >= len(tc.want), nil
			})
			cancel()
			if err := <-done; err != nil {
				t.Errorf("RunScrubber returned %v after its context was canceled; want nil", err)
			}
			if got := r.keys(); !slices.Equal(got, tc.want) {
				t.Errorf("reported %v, want %v", got, tc.want)
			}
			if tc.batch > 0 {
				for _, b := range r.batches {
					if len(b) > tc.batch {
						t.Errorf("a report of %d keys; BatchSize is %d", len(b), tc.batch)
					}
				}
			}
			if r.calls <= tc.failures {
				t.Errorf("%d report calls; the first %d failed, so want more", r.calls, tc.failures)
			}
		})
	}
}

func TestRunScrubberStoreClosed(t *testing.T) {
	t.Parallel()
	store, _ := openStore(t)
	store.Close()
	err := shardserver.RunScrubber(context.Background(), store, func(context.Context, []shardstore.Key) error { return nil }, shardserver.ScrubberOptions{})
	if !errors.Is(err, shardstore.ErrClosed) {
		t.Errorf("RunScrubber on a closed store returned %v, want ErrClosed", err)
	}
}
