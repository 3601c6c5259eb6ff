// Package examples holds the seed's example functions, served by
// `taskworker worker --examples`, `taskworker up` and the test cluster.
package examples

import (
	"context"
	"fmt"
	"time"
)

// MaxSleep bounds the sleep example, so a caller cannot park a worker.
const MaxSleep = 60 * time.Second

// Hello is the seed's hello_world.
func Hello() string { return "Hello from HiveMind!" }

// Add is the seed's add_numbers. It takes numbers, so 1.5 + 2 works too.
func Add(a, b float64) float64 { return a + b }

// Echo returns its argument unchanged.
func Echo(v any) any { return v }

// Sleep waits ms milliseconds (or until the call is cancelled) and returns
// them.
func Sleep(ctx context.Context, ms int) (int, error) {
	d := time.Duration(ms) * time.Millisecond
	if d < 0 || d > MaxSleep {
		return 0, fmt.Errorf("sleep: %d ms is outside 0..%d", ms, MaxSleep.Milliseconds())
	}
	t := time.NewTimer(d)
	defer t.Stop()
	select {
	case <-t.C:
		return ms, nil
	case <-ctx.Done():
		return 0, ctx.Err()
	}
}

// Register registers every example on a worker. All of them are idempotent.
func Register(register func(name string, fn any, idempotent bool) error) error {
	for _, f := range []struct {
		name string
		fn   any
	}{
		{"hello", Hello},
		{"add", Add},
		{"echo", Echo},
		{"sleep", Sleep},
	} {
		if err := register(f.name, f.fn, true); err != nil {
			return err
		}
	}
	return nil
}
