package bench

import (
	"context"
	"fmt"
	"io"
	"math/rand/v2"
	"os"
	"runtime/pprof"
	"syscall"
	"time"

	"github.com/hivemind/taskworker"
	v1 "github.com/hivemind/taskworker/api/taskworker/v1"
)

// FilesConfig configures the storage benchmark.
type FilesConfig struct {
	// Size of the large file pushed and fetched.
	Size int64
	// SmallFiles are pushed at SmallConcurrency for SmallDuration.
	SmallSize        int
	SmallConcurrency int
	SmallDuration    time.Duration
	// DiskDir is where the fsync'd sequential write baseline runs (the
	// workers' disk).
	DiskDir string
	// KillWorker, when set, loses a worker (SIGKILL, no restart) so that
	// repair can be timed; LeaseTTL is how long the pool waits to notice.
	KillWorker func()
	LeaseTTL   time.Duration
	// Record, when set, is given each throughput measured: series "dd"
	// (the baseline), "push" and "get", in MiB/s.
	Record func(series string, mibPerSec float64)
	// CPUProfile, when set, is a file to write a CPU profile of this
	// process to while the small files are pushed.
	CPUProfile string
}

// Files measures a network's storage: a sequential write with fsync on the
// same disk as the baseline, a large Push and Get, small pushes per second,
// and the time to repair after a worker is lost. It prints as it goes.
func Files(ctx context.Context, c *taskworker.Client, cfg FilesConfig, out io.Writer) error {
	mib := func(n int64, d time.Duration) float64 { return float64(n) / (1 << 20) / d.Seconds() }
	record := func(series string, d time.Duration) {
		if cfg.Record != nil {
			cfg.Record(series, mib(cfg.Size, d))
		}
	}

	disk, err := diskBaseline(cfg.DiskDir, cfg.Size)
	if err != nil {
		return fmt.Errorf("disk baseline: %w", err)
	}
	record("dd", disk)
	fmt.Fprintf(out, "disk: sequential write of %d MiB + fsync: %.0f MiB/s\n", cfg.Size>>20, mib(cfg.Size, disk))

	start := time.Now()
	info, err := c.Upload(ctx, "bench-large", newPatternReader(cfg.Size))
	if err != nil {
		return fmt.Errorf("push: %w", err)
	}
	push := time.Since(start)
	record("push", push)
	fmt.Fprintf(out, "push %d MiB (%s): %.0f MiB/s, %.2fx the disk\n", cfg.Size>>20, info.Layout, mib(cfg.Size, push), disk.Seconds()/push.Seconds())

	start = time.Now()
	n := &countingWriter{}
	if _, err := c.Download(ctx, info.FileId, 0, n); err != nil {
		return fmt.Errorf("get: %w", err)
	}
	get := time.Since(start)
	record("get", get)
	if n.n != cfg.Size {
		return fmt.Errorf("get returned %d bytes, want %d", n.n, cfg.Size)
	}
	fmt.Fprintf(out, "get  %d MiB: %.0f MiB/s, %.2fx the disk\n", cfg.Size>>20, mib(cfg.Size, get), disk.Seconds()/get.Seconds())

	// Run, not a context with the window as its deadline: a call cut off by
	// that deadline would count as failed whenever the context's timer
	// fires later than gRPC sees the deadline pass (RATIONALE.md, "Why did
	// a quiet benchmark report thousands of DeadlineExceeded?").
	small := make([]byte, cfg.SmallSize)
	stopProfile, err := startCPUProfile(cfg.CPUProfile)
	if err != nil {
		return err
	}
	cpu0 := processCPU()
	r := Run(ctx, "push", cfg.SmallConcurrency, 0, cfg.SmallDuration, func(ctx context.Context) error {
		_, err := c.Push(ctx, "small", small)
		return err
	})
	cpu := processCPU() - cpu0
	if err := stopProfile(); err != nil {
		return err
	}
	fmt.Fprintf(out, "push %d B files at concurrency %d: %.0f/s (%d failed)\n", cfg.SmallSize, cfg.SmallConcurrency, r.Rate(), r.Errors)
	if r.Calls > 0 {
		fmt.Fprintf(out, "  latency p50 %s, p99 %s; CPU of this process (client, pool, etcd) %.0f µs per push\n",
			round(r.P50), round(r.P99), float64(cpu.Microseconds())/float64(r.Calls))
	}
	if r.FirstError != nil {
		fmt.Fprintf(out, "  first error: %v\n", r.FirstError)
	}

	if cfg.KillWorker == nil {
		return nil
	}
	admin := v1.NewAdminServiceClient(c.Conn())
	before, err := admin.Status(ctx, &v1.StatusRequest{})
	if err != nil {
		return err
	}
	cfg.KillWorker()
	killed := time.Now()
	expired := killed.Add(cfg.LeaseTTL)
	var st *v1.StatusResponse
	for {
		if st, err = admin.Status(ctx, &v1.StatusRequest{}); err != nil {
			return err
		}
		if time.Now().After(expired) && st.FilesReduced == 0 && st.FilesLost == 0 && st.ShardsRebuilt > before.ShardsRebuilt {
			break
		}
		if time.Since(killed) > 10*time.Minute {
			return fmt.Errorf("repair not done after 10 minutes: %+v", st)
		}
		time.Sleep(250 * time.Millisecond) // Status scans every manifest: poll gently
	}
	repair := time.Since(expired)
	rebuilt := st.BytesRebuilt - before.BytesRebuilt
	fmt.Fprintf(out, "repair after losing a worker: %d shards, %d MiB, rebuilt in %.1fs after the lease expired (%.0f MiB/s; 1 GiB in %.0fs)\n",
		st.ShardsRebuilt-before.ShardsRebuilt, rebuilt>>20, repair.Seconds(), mib(rebuilt, repair), float64(1<<30)/(float64(rebuilt)/repair.Seconds()))
	return nil
}

// processCPU is the CPU time this process has used, user and system.
func processCPU() time.Duration {
	var ru syscall.Rusage
	if err := syscall.Getrusage(syscall.RUSAGE_SELF, &ru); err != nil {
		return 0
	}
	return time.Duration(ru.Utime.Nano() + ru.Stime.Nano())
}

// startCPUProfile starts a CPU profile into path, if it is set; the
// function returned stops it.
func startCPUProfile(path string) (stop func() error, err error) {
	if path == "" {
		return func() error { return nil }, nil
	}
	f, err := os.Create(path)
	if err != nil {
		return nil, fmt.Errorf("cpu profile: %w", err)
	}
	if err := pprof.StartCPUProfile(f); err != nil {
		f.Close()
		return nil, fmt.Errorf("cpu profile: %w", err)
	}
	return func() error {
		pprof.StopCPUProfile()
		return f.Close()
	}, nil
}

// diskBaseline writes size bytes to a file in dir and fsyncs it, like
// dd bs=4M conv=fsync.
func diskBaseline(dir string, size int64) (time.Duration, error) {
	f, err := os.CreateTemp(dir, "bench-dd-*")
	if err != nil {
		return 0, err
	}
	defer os.Remove(f.Name())
	defer f.Close()
	buf := make([]byte, 4<<20)
	fillPattern(buf, 1)
	start := time.Now()
	for written := int64(0); written < size; written += int64(len(buf)) {
		if _, err := f.Write(buf[:min(int64(len(buf)), size-written)]); err != nil {
			return 0, err
		}
	}
	if err := f.Sync(); err != nil {
		return 0, err
	}
	return time.Since(start), nil
}

// patternReader yields size bytes of a random pattern cheaply: a 4 MiB
// random buffer, each pass xored with a new word, so blocks differ.
type patternReader struct {
	buf  []byte
	off  int
	left int64
	pass uint64
}

func newPatternReader(size int64) *patternReader {
	r := &patternReader{buf: make([]byte, 4<<20), left: size}
	fillPattern(r.buf, 0)
	return r
}

func fillPattern(b []byte, seed uint64) {
	rng := rand.New(rand.NewPCG(seed, 42))
	for i := 0; i+8 <= len(b); i += 8 {
		v := rng.Uint64()
		for j := range 8 {
			b[i+j] = byte(v >> (8 * j))
		}
	}
}

func (r *patternReader) Read(p []byte) (int, error) {
	if r.left == 0 {
		return 0, io.EOF
	}
	if r.off == len(r.buf) {
		r.off = 0
		r.pass++
		for i := 0; i < 64; i++ {
			r.buf[i] ^= byte(r.pass >> (i % 8))
		}
	}
	n := copy(p, r.buf[r.off:min(len(r.buf), r.off+int(min(int64(len(p)), r.left)))])
	r.off += n
	r.left -= int64(n)
	return n, nil
}

type countingWriter struct{ n int64 }

func (w *countingWriter) Write(p []byte) (int, error) {
	w.n += int64(len(p))
	return len(p), nil
}
