package chaos

import (
	"context"
	"flag"
	"os"
	"strconv"
	"testing"
	"time"

	"github.com/hivemind/taskworker/internal/proctest"
)

var (
	seedFlag = flag.Uint64("chaos.seed", envUint("TASKWORKER_CHAOS_SEED"),
		"seed of TestLinearizableUnderFaults (0: a new one, printed); also $TASKWORKER_CHAOS_SEED")
	durationFlag = flag.Duration("chaos.duration", envDuration("TASKWORKER_CHAOS_DURATION", 40*time.Second),
		"faulty phase of TestLinearizableUnderFaults; also $TASKWORKER_CHAOS_DURATION")
)

func envUint(name string) uint64 {
	v, _ := strconv.ParseUint(os.Getenv(name), 10, 64)
	return v
}

func envDuration(name string, def time.Duration) time.Duration {
	if d, err := time.ParseDuration(os.Getenv(name)); err == nil {
		return d
	}
	return def
}

// Clients on three files while workers and pools are killed, a worker is
// stopped past its lease and a disk fills: the history is linearizable,
// and afterwards every file is readable and at full redundancy.
func TestLinearizableUnderFaults(t *testing.T) {
	binary, err := proctest.Build(t.TempDir())
	if err != nil {
		t.Fatal(err)
	}
	seed := *seedFlag
	if seed == 0 {
		seed = uint64(time.Now().UnixNano())
	}
	// The data and logs stay when the run fails, for the replay.
	dir, err := os.MkdirTemp("", "taskworker-chaos-")
	if err != nil {
		t.Fatal(err)
	}
	cfg := DefaultConfig(binary, dir, seed)
	cfg.Duration = *durationFlag
	cfg.Log = testWriter{t}
	rep, err := Run(context.Background(), cfg)
	t.Log("\n" + rep.String())
	if err != nil {
		t.Fatalf("%v\nreplay: go test ./internal/chaos -run TestLinearizableUnderFaults -chaos.seed %d (or TASKWORKER_CHAOS_SEED=%d)", err, seed, seed)
	}
	os.RemoveAll(dir)
	total := 0
	for _, n := range rep.Faults {
		total += n
	}
	if total == 0 {
		t.Errorf("no fault was injected in %s: the run tested nothing", cfg.Duration)
	}
}

type testWriter struct{ t *testing.T }

func (w testWriter) Write(p []byte) (int, error) {
	w.t.Log(string(p[:len(p)-1]))
	return len(p), nil
}
