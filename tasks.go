package taskworker

import (
	"context"
	"encoding/json"
	"fmt"

	v1 "github.com/hivemind/taskworker/api/taskworker/v1"
	"github.com/hivemind/taskworker/internal/function"
)

// Task is a call that outlives its caller: see Client.Submit.
type Task = v1.Task

// SubmitOption configures a submitted task.
type SubmitOption func(*v1.SubmitRequest)

// WithIdempotencyKey makes a second Submit with the same key return the
// first task instead of making another.
func WithIdempotencyKey(key string) SubmitOption {
	return func(r *v1.SubmitRequest) { r.IdempotencyKey = key }
}

// WithRetry sets how often the task is tried: attempts in all, and whether
// the function's own errors are retried too (a lost worker always is).
func WithRetry(attempts int, retryErrors bool) SubmitOption {
	return func(r *v1.SubmitRequest) {
		r.Retry = &v1.RetryPolicy{MaxAttempts: int32(attempts), RetryErrors: retryErrors}
	}
}

// Submit records a call of the function name as a task and returns its id
// once the task is durable: it runs even if the caller goes away, and runs
// again on another worker if its worker is lost. Wait for its result with
// WaitTask.
func (c *Client) Submit(ctx context.Context, name string, args []any, opts ...SubmitOption) (string, error) {
	if args == nil {
		args = []any{}
	}
	b, err := json.Marshal(args)
	if err != nil {
		return "", fmt.Errorf("encoding the arguments of %s: %w", name, err)
	}
	req := &v1.SubmitRequest{FunctionName: name, Args: b}
	for _, o := range opts {
		o(req)
	}
	resp, err := v1.NewTaskServiceClient(c.conn).Submit(ctx, req)
	if err != nil {
		return "", err
	}
	return resp.Task.Id, nil
}

// GetTask returns a task as it is now.
func (c *Client) GetTask(ctx context.Context, id string) (*Task, error) {
	resp, err := v1.NewTaskServiceClient(c.conn).GetTask(ctx, &v1.GetTaskRequest{Id: id})
	if err != nil {
		return nil, err
	}
	return resp.Task, nil
}

// WaitTask returns a task once it has ended (succeeded, failed or
// cancelled), or ctx's error.
func (c *Client) WaitTask(ctx context.Context, id string) (*Task, error) {
	resp, err := v1.NewTaskServiceClient(c.conn).WaitTask(ctx, &v1.WaitTaskRequest{Id: id})
	if err != nil {
		return nil, err
	}
	return resp.Task, nil
}

// CancelTask cancels a task: a queued one never runs; a running one has its
// context cancelled on its worker.
func (c *Client) CancelTask(ctx context.Context, id string) (*Task, error) {
	resp, err := v1.NewTaskServiceClient(c.conn).CancelTask(ctx, &v1.CancelTaskRequest{Id: id})
	if err != nil {
		return nil, err
	}
	return resp.Task, nil
}

// TaskInfo names the task a function runs for and which attempt this is
// (from 1). A task runs at least once: a function with effects outside
// itself uses them to make those effects idempotent.
type TaskInfo = function.Task

// TaskFrom returns the task a function's call runs for; ok is false for a
// plain call.
func TaskFrom(ctx context.Context) (t TaskInfo, ok bool) { return function.TaskFrom(ctx) }
