package sandbox

import (
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"os"
	"path/filepath"
	"slices"
	"strconv"
	"strings"
	"sync"
	"sync/atomic"
	"testing"
	"time"
)

// The figures these give on the project's machine, and the command, are in
// docs/BENCHMARKS.md and docs/RATIONALE.md.

// benchMode is a way to run guests.
type benchMode struct {
	name string
	cfg  Config
}

// benchModes are the ways guests run: in this process under time limits
// (wazero's deadline checks at every loop), in child processes under time
// limits (killed when over), and in this process with no time limit at all
// (no checks: a runaway guest would never stop), the baseline.
func benchModes(b *testing.B) []benchMode {
	unlimited := DefaultConfig()
	unlimited.noCloseOnContextDone = true
	return []benchMode{
		{"in-process", DefaultConfig()},
		{"child-process", isolated(b, DefaultConfig())},
		{"unlimited", unlimited},
	}
}

// nativeAdd is what a native worker does for add: bind the JSON arguments,
// call, encode the result.
func nativeAdd(input []byte) ([]byte, error) {
	var args [2]int
	if err := json.Unmarshal(input, &args); err != nil {
		return nil, err
	}
	return json.Marshal(args[0] + args[1])
}

// work is testdata/hostile's CPU-bound loop, run natively.
func work(n int) uint64 {
	x := uint64(1)
	for i := 0; i < n; i++ {
		x = x*6364136223846793005 + 1442695040888963407
		x ^= x >> 29
	}
	return x
}

func BenchmarkNativeAdd(b *testing.B) {
	input := []byte("[1, 2]")
	for b.Loop() {
		if _, err := nativeAdd(input); err != nil {
			b.Fatal(err)
		}
	}
}

// BenchmarkWarmCall is one call on a warm instance, input to output.
func BenchmarkWarmCall(b *testing.B) {
	noop := wasmModule{funcs: []wasmFunc{{export: "run", results: []byte{i32}, body: bodyReturnZero}}}.bytes()
	cases := []struct {
		name, export string
		wasm         func(b *testing.B) []byte
		input        []byte
	}{
		{"noop-wasm", "run", func(*testing.B) []byte { return noop }, nil},
		{"go-ok", "ok", func(b *testing.B) []byte { return guestWasm(b, hostileGuest) }, nil},
		{"go-add", "add", func(b *testing.B) []byte { return guestWasm(b, goAdd) }, []byte("[1, 2]")},
		{"rust-count-vowels", "count_vowels", func(b *testing.B) []byte { return extismPlugin(b, "count_vowels.wasm") }, []byte("Hello, World")},
		{"go-echo-1KiB", "echo", func(b *testing.B) []byte { return guestWasm(b, hostileGuest) }, make([]byte, 1*KiB)},
		{"go-echo-64KiB", "echo", func(b *testing.B) []byte { return guestWasm(b, hostileGuest) }, make([]byte, 64*KiB)},
	}
	for _, mode := range benchModes(b) {
		r := newTestRuntime(b, mode.cfg)
		for _, c := range cases {
			b.Run(c.name+"/"+mode.name, func(b *testing.B) {
				m := load(b, r, c.wasm(b), Spec{Export: c.export, Concurrency: 1})
				defer m.Close(context.Background())
				ctx := context.Background()
				if _, err := m.Call(ctx, c.input); err != nil { // the guest's own start-up
					b.Fatal(err)
				}
				b.SetBytes(int64(len(c.input)))
				for b.Loop() {
					if _, err := m.Call(ctx, c.input); err != nil {
						b.Fatal(err)
					}
				}
			})
		}
	}
}

// BenchmarkColdCall is a call that needs a new instance of a module whose
// compiled code is at hand: instantiation, the guest's start-up, the call,
// and closing the instance; in a child process, also starting the process
// and reading the compiled code from the disk cache.
func BenchmarkColdCall(b *testing.B) {
	cases := []struct {
		name, export string
		wasm         func(b *testing.B) []byte
		input        []byte
	}{
		{"go-add", "add", func(b *testing.B) []byte { return guestWasm(b, goAdd) }, []byte("[1, 2]")},
		{"rust-count-vowels", "count_vowels", func(b *testing.B) []byte { return extismPlugin(b, "count_vowels.wasm") }, []byte("Hello, World")},
	}
	for _, mode := range benchModes(b) {
		if mode.name == "unlimited" {
			continue
		}
		r := newTestRuntime(b, mode.cfg)
		for _, c := range cases {
			b.Run(c.name+"/"+mode.name, func(b *testing.B) {
				m := load(b, r, c.wasm(b), Spec{Export: c.export})
				defer m.Close(context.Background())
				ctx := context.Background()
				for b.Loop() {
					inst, err := m.newRunner(ctx)
					if err != nil {
						b.Fatal(err)
					}
					if _, _, err := inst.run(ctx, c.input); err != nil {
						b.Fatal(err)
					}
					stop(inst)
				}
			})
			if mode.cfg.isolated() {
				// The first call on a process started ahead (at Load, as a
				// spare or a replacement): its instance exists, its guest
				// has not run yet.
				b.Run(c.name+"/child-process-started", func(b *testing.B) {
					m := load(b, r, c.wasm(b), Spec{Export: c.export})
					defer m.Close(context.Background())
					ctx := context.Background()
					for b.Loop() {
						b.StopTimer()
						inst, err := m.newRunner(ctx)
						if err != nil {
							b.Fatal(err)
						}
						b.StartTimer()
						if _, _, err := inst.run(ctx, c.input); err != nil {
							b.Fatal(err)
						}
						b.StopTimer()
						stop(inst) // not Discard: it would start a spare while the timer runs
						b.StartTimer()
					}
				})
			}
		}
	}
}

// BenchmarkCallAfterTrap is a good call right after a call of the same
// function outgrew its memory (a Go guest, one instance): the time until
// an instance is ready again, the guest's start-up and the call.
func BenchmarkCallAfterTrap(b *testing.B) {
	for _, mode := range benchModes(b) {
		if mode.name == "unlimited" {
			continue
		}
		b.Run(mode.name, func(b *testing.B) {
			r := newTestRuntime(b, mode.cfg)
			m := load(b, r, guestWasm(b, hostileGuest), Spec{Export: "output", Concurrency: 1, Limits: Limits{Memory: 16 * MiB}})
			defer m.Close(context.Background())
			ctx := context.Background()
			for b.Loop() {
				b.StopTimer()
				if _, err := m.Call(ctx, []byte("[67108864]")); !errors.Is(err, ErrMemoryLimit) {
					b.Fatalf("got %v; want ErrMemoryLimit", err)
				}
				b.StartTimer()
				if out, err := m.Call(ctx, []byte("[3]")); err != nil || string(out) != `"xxx"` {
					b.Fatalf("got %q, %v", out, err)
				}
			}
		})
	}
}

// BenchmarkBurst is the first burst after a deploy: 64 concurrent calls of
// a Go guest that has just loaded (one process started, by Load). Each
// op is one burst; p50, p99 and p999 are those of the calls' latencies over
// all bursts.
func BenchmarkBurst(b *testing.B) {
	const burst = 64
	r := newTestRuntime(b, isolated(b, DefaultConfig()))
	wasm := guestWasm(b, goAdd)
	ctx := context.Background()
	var lat []time.Duration
	var mu sync.Mutex
	for b.Loop() {
		b.StopTimer()
		m := load(b, r, wasm, Spec{Export: "add"})
		b.StartTimer()
		var wg sync.WaitGroup
		for range burst {
			wg.Go(func() {
				start := time.Now()
				if out, err := m.Call(ctx, []byte("[1, 2]")); err != nil || string(out) != "3" {
					b.Errorf("got %q, %v", out, err)
				}
				mu.Lock()
				lat = append(lat, time.Since(start))
				mu.Unlock()
			})
		}
		wg.Wait()
		b.StopTimer()
		m.Close(ctx)
		b.StartTimer()
	}
	slices.Sort(lat)
	at := func(q float64) float64 { return float64(lat[min(len(lat)-1, int(q*float64(len(lat))))]) / 1e6 }
	b.ReportMetric(at(0.5), "p50-ms")
	b.ReportMetric(at(0.99), "p99-ms")
	b.ReportMetric(at(0.999), "p999-ms")
}

// BenchmarkRestart is a worker restart's first call: a new Runtime over
// the disk cache, Load (compiled code read from disk, one instance made)
// and the call.
func BenchmarkRestart(b *testing.B) {
	cfg := DefaultConfig()
	cfg.CacheDir = b.TempDir()
	wasm := guestWasm(b, goAdd)
	ctx := context.Background()
	warm := newTestRuntime(b, cfg)
	load(b, warm, wasm, Spec{Export: "add"}) // fills the disk cache
	for b.Loop() {
		r, err := NewRuntime(ctx, cfg)
		if err != nil {
			b.Fatal(err)
		}
		host, _ := testHost()
		m, err := r.Load(ctx, wasm, Spec{Export: "add"}, host)
		if err != nil {
			b.Fatal(err)
		}
		if _, err := m.Call(ctx, []byte("[1, 2]")); err != nil {
			b.Fatal(err)
		}
		if err := r.Close(ctx); err != nil {
			b.Fatal(err)
		}
	}
}

// BenchmarkCPU runs a CPU-bound loop natively and in a Go guest in each
// mode: unlimited is the guest's speed with no way to stop it.
func BenchmarkCPU(b *testing.B) {
	const n = 20_000_000
	input := []byte("[" + strconv.Itoa(n) + "]")
	b.Run("native", func(b *testing.B) {
		for b.Loop() {
			if work(n) == 0 {
				b.Fatal("zero")
			}
		}
	})
	for _, mode := range benchModes(b) {
		b.Run("wasm/"+mode.name, func(b *testing.B) {
			r := newTestRuntime(b, mode.cfg)
			m := load(b, r, guestWasm(b, hostileGuest), Spec{Export: "work", Concurrency: 1})
			want := strconv.FormatUint(work(n), 10)
			for b.Loop() {
				out, err := m.Call(context.Background(), input)
				if err != nil || string(out) != want {
					b.Fatalf("got %s, %v; want %s", out, err, want)
				}
			}
		})
	}
}

// BenchmarkMergeDataSegments is what Load spends merging a Go guest's data
// segments (38,618 of them) before it compiles.
func BenchmarkMergeDataSegments(b *testing.B) {
	wasm := guestWasm(b, goAdd)
	b.SetBytes(int64(len(wasm)))
	for b.Loop() {
		mergeDataSegments(wasm)
	}
}

// stop ends a runner made outside the Module's Supervisor, and waits for a
// child process to exit.
func stop(r runner) {
	r.Kill()
	if c, ok := r.(*child); ok {
		<-c.proc.Exited()
	}
}

// BenchmarkWarmCallsParallel is callers sharing a Go guest's 4 warm child
// processes (16 callers: a worker's share of `bench call --concurrency 64`
// through the pool; 2: the calls one user may run at once on a 2-CPU
// worker), with the CPU time and the voluntary context switches per call of
// the children and of this process, read from /proc.
func BenchmarkWarmCallsParallel(b *testing.B) {
	const instances = 4
	for _, callers := range []int{2, 16} {
		b.Run(fmt.Sprintf("callers-%d", callers), func(b *testing.B) {
			r := newTestRuntime(b, isolated(b, DefaultConfig()))
			m := load(b, r, guestWasm(b, goAdd), Spec{Export: "add", Concurrency: instances})
			defer m.Close(context.Background())
			ctx := context.Background()
			var wg sync.WaitGroup
			for range instances { // every instance warm, the guest's start-up done
				wg.Go(func() { m.Call(ctx, []byte("[1, 2]")) })
			}
			wg.Wait()
			self := os.Getpid()
			before, beforeSelf := procUsage(childPIDs(self)), procUsage([]int{self})
			b.ResetTimer()
			var n atomic.Int64
			n.Store(int64(b.N))
			for range callers {
				wg.Go(func() {
					for n.Add(-1) >= 0 {
						if out, err := m.Call(ctx, []byte("[1, 2]")); err != nil || string(out) != "3" {
							b.Errorf("got %q, %v", out, err)
							return
						}
					}
				})
			}
			wg.Wait()
			b.StopTimer()
			after, afterSelf := procUsage(childPIDs(self)), procUsage([]int{self})
			calls := float64(b.N)
			b.ReportMetric(float64(after.cpu-before.cpu)/calls/1e3, "child-µs/call")
			b.ReportMetric(float64(after.switches-before.switches)/calls, "child-cs/call")
			b.ReportMetric(float64(afterSelf.cpu-beforeSelf.cpu)/calls/1e3, "parent-µs/call")
			b.ReportMetric(float64(afterSelf.switches-beforeSelf.switches)/calls, "parent-cs/call")
		})
	}
}

// usage is processes' CPU time (ns) and voluntary context switches.
type usage struct{ cpu, switches int64 }

// childPIDs are the descendants of pid, from /proc.
func childPIDs(pid int) []int {
	var pids []int
	tasks, _ := filepath.Glob(fmt.Sprintf("/proc/%d/task/*/children", pid))
	for _, t := range tasks {
		data, _ := os.ReadFile(t)
		for _, f := range strings.Fields(string(data)) {
			if c, err := strconv.Atoi(f); err == nil {
				pids = append(pids, c)
				pids = append(pids, childPIDs(c)...)
			}
		}
	}
	return pids
}

// procUsage sums the usage of pids, each over all its threads, from /proc.
func procUsage(pids []int) usage {
	var u usage
	for _, pid := range pids {
		stat, err := os.ReadFile(fmt.Sprintf("/proc/%d/stat", pid))
		if err != nil {
			continue // gone
		}
		_, rest, _ := strings.Cut(string(stat), ") ")
		f := strings.Fields(rest)
		ut, _ := strconv.ParseInt(f[11], 10, 64)
		st, _ := strconv.ParseInt(f[12], 10, 64)
		u.cpu += (ut + st) * 1e7 // clock ticks of 10 ms
		tasks, _ := filepath.Glob(fmt.Sprintf("/proc/%d/task/*/status", pid))
		for _, t := range tasks {
			data, _ := os.ReadFile(t)
			for _, line := range strings.Split(string(data), "\n") {
				if v, ok := strings.CutPrefix(line, "voluntary_ctxt_switches:"); ok {
					n, _ := strconv.ParseInt(strings.TrimSpace(v), 10, 64)
					u.switches += n
				}
			}
		}
	}
	return u
}
