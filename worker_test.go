package taskworker_test

import (
	"context"
	"errors"
	"strings"
	"testing"
	"time"

	"google.golang.org/grpc/codes"
	"google.golang.org/grpc/status"

	"github.com/hivemind/taskworker"
	"github.com/hivemind/taskworker/internal/cluster"
)

// TestFunctionRefusesBadNames: a name the pool would refuse fails at
// Function, not later in a registration that never succeeds.
func TestFunctionRefusesBadNames(t *testing.T) {
	w, err := taskworker.New("w1")
	if err != nil {
		t.Fatal(err)
	}
	tests := []struct {
		name, want string
	}{
		{"reports/daily", `function name "reports/daily": use 1 to 200 letters`},
		{"", `function name ""`},
		{"1st", `function name "1st"`},
		{strings.Repeat("f", 201), "function name"},
		{"has space", `function name "has space"`},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			if err := w.Function(tt.name, func() {}); err == nil || !strings.Contains(err.Error(), tt.want) {
				t.Fatalf("Function(%q) = %v; want an error containing %q", tt.name, err, tt.want)
			}
		})
	}
	if err := w.Function("reports.daily", func() {}); err != nil {
		t.Errorf("a valid name: %v", err)
	}
	if _, err := taskworker.New("worker/1"); err == nil || !strings.Contains(err.Error(), `worker id "worker/1"`) {
		t.Errorf("New with a bad worker id: %v", err)
	}
}

// TestWaitRegisteredSaysWhyThePoolRefused: a worker with a join token the
// pool does not know keeps retrying, and WaitRegistered says why it fails.
func TestWaitRegisteredSaysWhyThePoolRefused(t *testing.T) {
	c := cluster.New(t, cluster.Options{Workers: 1})
	unknown := "tw_" + strings.Repeat("A", 43)
	w, err := taskworker.New("stranger", taskworker.WithPool(c.PoolAddr(0), unknown), taskworker.WithPoolCA(c.CA.CertPEM()))
	if err != nil {
		t.Fatal(err)
	}
	ctx, cancel := context.WithTimeout(context.Background(), time.Minute)
	defer cancel()
	if err := w.Start(ctx, "127.0.0.1:0"); err != nil {
		t.Fatal(err)
	}
	defer w.Stop(ctx)
	// Wait for the first refusal: each short wait ends in an error that
	// says whether the pool has refused yet.
	for ctx.Err() == nil {
		wctx, wcancel := context.WithTimeout(ctx, 100*time.Millisecond)
		err = w.WaitRegistered(wctx)
		wcancel()
		if err == nil || strings.Contains(err.Error(), "refused it") {
			break
		}
	}
	if err == nil || !strings.Contains(err.Error(), "refused it") || !strings.Contains(err.Error(), "not recognised") {
		t.Fatalf("WaitRegistered = %v; want it to say the pool refused the token", err)
	}
	if status.Code(errors.Unwrap(err)) != codes.Unauthenticated {
		t.Errorf("the refusal's code: %v", status.Code(errors.Unwrap(err)))
	}
}

// TestNewCopiesItsOptions: labels changed after New do not reach the pool.
func TestNewCopiesItsOptions(t *testing.T) {
	c := cluster.New(t, cluster.Options{Workers: 1})
	ctx, cancel := context.WithTimeout(context.Background(), time.Minute)
	defer cancel()
	labels := map[string]string{"zone": "a"}
	w, err := taskworker.New("labelled", taskworker.WithPool(c.PoolAddr(0), c.JoinToken), taskworker.WithPoolCA(c.CA.CertPEM()), taskworker.WithLabels(labels))
	if err != nil {
		t.Fatal(err)
	}
	labels["zone"] = "changed after New"
	if err := w.Start(ctx, "127.0.0.1:0"); err != nil {
		t.Fatal(err)
	}
	defer w.Stop(ctx)
	if err := w.WaitRegistered(ctx); err != nil {
		t.Fatal(err)
	}
	c.WaitWorkers(2)
	workers, err := c.Client(0).Workers(ctx)
	if err != nil {
		t.Fatal(err)
	}
	for _, info := range workers {
		if info.WorkerId == "labelled" {
			if info.Labels["zone"] != "a" {
				t.Errorf("the pool sees zone %q; want the %q given to New", info.Labels["zone"], "a")
			}
			return
		}
	}
	t.Fatalf("the pool does not list the worker: %v", workers)
}

// TestStopWaitsForCallsBeforeClosingStorage stops a worker while one of its
// calls still has a file to write through Storage: the call finishes and
// its write succeeds, because Stop closes the Storage client only after
// the calls in flight are done.
func TestStopWaitsForCallsBeforeClosingStorage(t *testing.T) {
	c := cluster.New(t, cluster.Options{Workers: 3})
	ctx, cancel := context.WithTimeout(context.Background(), time.Minute)
	defer cancel()
	w, err := taskworker.New("library_worker", taskworker.WithPool(c.PoolAddr(0), c.JoinToken), taskworker.WithPoolCA(c.CA.CertPEM()),
		taskworker.WithStorageToken(c.AdminToken), taskworker.WithDrainDelay(0))
	if err != nil {
		t.Fatal(err)
	}
	entered, release := make(chan struct{}), make(chan struct{})
	if err := w.Function("save_later", func(ctx context.Context, text string) (string, error) {
		storage, err := w.Storage()
		if err != nil {
			return "", err
		}
		close(entered)
		<-release
		info, err := storage.Push(ctx, "later.txt", []byte(text))
		if err != nil {
			return "", err
		}
		return info.FileId, nil
	}); err != nil {
		t.Fatal(err)
	}
	if err := w.Start(ctx, "127.0.0.1:0"); err != nil {
		t.Fatal(err)
	}
	c.WaitWorkers(4)
	cl := c.Client(0)
	result := make(chan error, 1)
	go func() {
		_, err := cl.Call(ctx, "save_later", "written while stopping")
		result <- err
	}()
	<-entered
	stopped := make(chan error, 1)
	go func() { stopped <- w.Stop(ctx) }()
	c.WaitWorkers(3) // the worker has left the pool: Stop is under way
	close(release)
	if err := <-result; err != nil {
		t.Errorf("the call in flight during Stop: %v", err)
	}
	if err := <-stopped; err != nil {
		t.Errorf("Stop: %v", err)
	}
	if _, err := w.Storage(); err == nil {
		t.Error("Storage after Stop returned a client")
	}
}
