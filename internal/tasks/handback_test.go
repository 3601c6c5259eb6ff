package tasks_test

import (
	"context"
	"errors"
	"strings"
	"sync/atomic"
	"testing"
	"time"

	v1 "github.com/hivemind/taskworker/api/taskworker/v1"
	"github.com/hivemind/taskworker/internal/tasks"
)

// An attempt its Caller hands back (its worker was drained) is queued
// again at once and does not count against max_attempts: a task allowed
// one attempt still runs to its end after two hand-backs.
func TestHandedBackAttemptIsNotCounted(t *testing.T) {
	cli := client(t, startEtcd(t))
	s := tasks.NewStore(cli, config("p1"))
	var calls atomic.Int32
	runnerOn(t, s, func(ctx context.Context, user string, req *v1.FunctionCallRequest) (*v1.FunctionCallResponse, error) {
		if calls.Add(1) <= 2 {
			return nil, tasks.HandedBack("handed back: worker w1 was drained and its grace ran out")
		}
		return echo(ctx, user, req)
	})
	task := submit(t, s, "alice", &v1.SubmitRequest{FunctionName: "f", Retry: &v1.RetryPolicy{MaxAttempts: 1}})
	got := wait(t, s, "alice", task.Id)
	if got.State != v1.TaskState_TASK_STATE_SUCCEEDED {
		t.Fatalf("task ended %s, want SUCCEEDED: %v", got.State, got)
	}
	if len(got.Attempts) != 3 {
		t.Fatalf("%d attempts, want 3 (two handed back): %v", len(got.Attempts), got.Attempts)
	}
	for _, a := range got.Attempts[:2] {
		if !a.HandedBack || !strings.Contains(a.Error, "w1 was drained") {
			t.Errorf("attempt %d: handed_back=%v error %q; want handed back, saying its worker was drained", a.Number, a.HandedBack, a.Error)
		}
	}
	if a := got.Attempts[2]; a.HandedBack || a.WorkerId != "w1" {
		t.Errorf("last attempt %v; want it run and not handed back", a)
	}
	if !errors.Is(tasks.HandedBack("x"), tasks.ErrHandedBack) || errors.Is(errors.New("handed back"), tasks.ErrHandedBack) {
		t.Error("HandedBack's errors must be ErrHandedBack, and no other error")
	}
}

// An ended task is collected by etcd once Keep has passed (the pool's
// --task-retention), and no sooner than Keep.
func TestEndedTaskCollectedAfterKeep(t *testing.T) {
	cli := client(t, startEtcd(t))
	cfg := config("p1")
	cfg.Keep = 2 * time.Second
	s := tasks.NewStore(cli, cfg)
	runnerOn(t, s, echo)
	task := submit(t, s, "alice", &v1.SubmitRequest{FunctionName: "f", IdempotencyKey: "k1"})
	ended := wait(t, s, "alice", task.Id)
	if ended.State != v1.TaskState_TASK_STATE_SUCCEEDED {
		t.Fatalf("task ended %s", ended.State)
	}
	endedAt := time.UnixMilli(ended.EndedAtMs)
	ctx, cancel := context.WithTimeout(context.Background(), 30*time.Second)
	defer cancel()
	for {
		_, _, err := s.Get(ctx, "alice", task.Id)
		if errors.Is(err, tasks.ErrNotFound) {
			break
		}
		if err != nil {
			t.Fatal(err)
		}
		if ctx.Err() != nil {
			t.Fatalf("task %s still kept %s after it ended, with a Keep of %s", task.Id, time.Since(endedAt), cfg.Keep)
		}
		time.Sleep(100 * time.Millisecond)
	}
	if kept := time.Since(endedAt); kept < cfg.Keep {
		t.Errorf("task collected %s after it ended; Keep is %s", kept, cfg.Keep)
	}
	// Its idempotency key went with it: the same key makes a new task.
	again := submit(t, s, "alice", &v1.SubmitRequest{FunctionName: "f", IdempotencyKey: "k1"})
	if again.Id == task.Id {
		t.Errorf("the idempotency key still names the collected task %s", task.Id)
	}
}

// Count counts a user's tasks by state in one pass, and only that user's.
func TestCountByState(t *testing.T) {
	cli := client(t, startEtcd(t))
	s := tasks.NewStore(cli, config("p1"))
	runnerOn(t, s, func(ctx context.Context, user string, req *v1.FunctionCallRequest) (*v1.FunctionCallResponse, error) {
		switch req.FunctionName {
		case "bad":
			return nil, errors.New("bad")
		case "block":
			<-ctx.Done()
			return nil, ctx.Err()
		}
		return echo(ctx, user, req)
	})
	var ids []string
	for _, f := range []string{"f", "f", "f", "bad", "bad"} {
		ids = append(ids, submit(t, s, "alice", &v1.SubmitRequest{FunctionName: f, Retry: &v1.RetryPolicy{MaxAttempts: 1}}).Id)
	}
	for _, id := range ids {
		wait(t, s, "alice", id)
	}
	submit(t, s, "alice", &v1.SubmitRequest{FunctionName: "block"})
	submit(t, s, "bob", &v1.SubmitRequest{FunctionName: "block"})
	counts, truncated, err := s.Count(context.Background(), "alice")
	if err != nil {
		t.Fatal(err)
	}
	want := map[v1.TaskState]int64{v1.TaskState_TASK_STATE_SUCCEEDED: 3, v1.TaskState_TASK_STATE_FAILED: 2, v1.TaskState_TASK_STATE_RUNNING: 1}
	if truncated || len(counts) != len(want) {
		t.Fatalf("counts %v (truncated %v), want %v", counts, truncated, want)
	}
	for st, n := range want {
		if counts[st] != n {
			t.Errorf("%s: %d, want %d", st, counts[st], n)
		}
	}
}
