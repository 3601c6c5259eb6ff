package main

import (
	"strings"
	"testing"
)

// Flags that cannot make a run fail before anything starts, saying what to
// change.
func TestBenchChaosFlags(t *testing.T) {
	tests := []struct {
		args []string
		want string
	}{
		{[]string{"--faults", "kill-worker,flood"}, `fault "flood": the fault classes are [kill-worker kill-pool stop-worker fill-disk]`},
		{[]string{"--workers", "2"}, "2 workers; run 3 to 32"},
		{[]string{"--clients", "0"}, "at least one client"},
		{[]string{"--duration", "0s"}, "duration 0s must be positive"},
	}
	for _, tt := range tests {
		t.Run(strings.Join(tt.args, " "), func(t *testing.T) {
			code, _, stderr := run(t, append([]string{"bench", "chaos"}, tt.args...)...)
			if code != 1 || !strings.Contains(stderr, tt.want) {
				t.Errorf("exit %d, stderr %q; want 1 and %q", code, stderr, tt.want)
			}
		})
	}
}
