package chaos

import (
	"context"
	"errors"
	"fmt"
	"math/rand/v2"
	"os"
	"path/filepath"
	"slices"
	"syscall"
	"time"
)

// Fault is a class of failure the injector causes.
type Fault string

const (
	// FaultKillWorker SIGKILLs a worker and restarts it on its data, after a
	// pause that is sometimes longer than its lease (so repair starts).
	FaultKillWorker Fault = "kill-worker"
	// FaultKillPool SIGKILLs one pool replica and restarts it; the other
	// serves meanwhile.
	FaultKillPool Fault = "kill-pool"
	// FaultStopWorker SIGSTOPs a worker for longer than its lease, then
	// SIGCONTs it: a worker that looks dead and comes back.
	FaultStopWorker Fault = "stop-worker"
	// FaultFillDisk fills the tmpfs holding a worker's shards, then frees
	// it. It needs root (to mount the tmpfs); without it it is skipped.
	FaultFillDisk Fault = "fill-disk"
)

// AllFaults lists every fault class, the default.
var AllFaults = []Fault{FaultKillWorker, FaultKillPool, FaultStopWorker, FaultFillDisk}

// ParseFaults parses a comma-separated list of fault classes.
func ParseFaults(list []string) ([]Fault, error) {
	var out []Fault
	for _, s := range list {
		ok := false
		for _, f := range AllFaults {
			if Fault(s) == f {
				out = append(out, f)
				ok = true
			}
		}
		if !ok {
			return nil, fmt.Errorf("fault %q: the fault classes are %v", s, AllFaults)
		}
	}
	return out, nil
}

// injector causes one fault at a time until ctx ends, then returns with
// every process running again. It goes through the fault classes in rounds,
// each round in an order its seeded random source shuffles, so that every
// class is exercised even in a short run.
type injector struct {
	c      *cluster
	rng    *rand.Rand
	faults []Fault
	counts map[Fault]int
}

func (in *injector) run(ctx context.Context) error {
	var round []Fault
	for {
		pause := time.Duration(500+in.rng.IntN(1500)) * time.Millisecond
		select {
		case <-ctx.Done():
			return nil
		case <-time.After(pause):
		}
		if len(round) == 0 {
			round = slices.Clone(in.faults)
			in.rng.Shuffle(len(round), func(i, j int) { round[i], round[j] = round[j], round[i] })
		}
		f := round[0]
		round = round[1:]
		if err := in.inject(ctx, f); err != nil {
			return fmt.Errorf("fault %s: %w", f, err)
		}
		in.counts[f]++
	}
}

// hold sleeps for d; it is not cut short by ctx, so that every fault ends
// the way it was planned (and the run stays replayable).
func hold(d time.Duration) { time.Sleep(d) }

func (in *injector) inject(ctx context.Context, f Fault) error {
	c := in.c
	lease := c.cfg.LeaseTTL
	switch f {
	case FaultKillWorker:
		w := c.workers[in.rng.IntN(len(c.workers))]
		in.c.cfg.logf("fault: SIGKILL %s", w.Name)
		w.Kill()
		hold(time.Duration(in.rng.Int64N(int64(2 * lease))))
		return w.Start()
	case FaultKillPool:
		i := in.rng.IntN(len(c.pools))
		in.c.cfg.logf("fault: SIGKILL pool%d", i)
		c.pools[i].Kill()
		hold(time.Duration(in.rng.Int64N(int64(2 * lease))))
		return c.startPool(context.WithoutCancel(ctx), i)
	case FaultStopWorker:
		w := c.workers[in.rng.IntN(len(c.workers))]
		d := lease + time.Duration(in.rng.Int64N(int64(lease)))
		in.c.cfg.logf("fault: SIGSTOP %s for %s", w.Name, d)
		_ = w.Signal(syscall.SIGSTOP)
		hold(d)
		_ = w.Signal(syscall.SIGCONT)
		return nil
	case FaultFillDisk:
		if c.disk == "" {
			return nil // skipped, as logged at start
		}
		in.c.cfg.logf("fault: fill the disk of %s", c.workers[0].Name)
		filler := filepath.Join(c.disk, "filler")
		if err := fill(filler); err != nil {
			return err
		}
		hold(lease + time.Duration(in.rng.Int64N(int64(lease))))
		return os.Remove(filler)
	}
	return fmt.Errorf("unknown fault %q", f)
}

// fill writes path until its file system is full.
func fill(path string) error {
	f, err := os.Create(path)
	if err != nil {
		return err
	}
	defer f.Close()
	buf := make([]byte, 1<<20)
	for {
		if _, err := f.Write(buf); err != nil {
			if errors.Is(err, syscall.ENOSPC) {
				return nil
			}
			return err
		}
	}
}
