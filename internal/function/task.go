package function

import "context"

// Task names the task a call runs for, and which attempt it is.
type Task struct {
	ID      string
	Attempt int
}

type taskKey struct{}

// WithTask returns ctx carrying the task a call runs for.
func WithTask(ctx context.Context, t Task) context.Context {
	return context.WithValue(ctx, taskKey{}, t)
}

// TaskFrom returns the task ctx's call runs for, if it runs one.
func TaskFrom(ctx context.Context) (Task, bool) {
	t, ok := ctx.Value(taskKey{}).(Task)
	return t, ok
}
