package starlarkrun

import (
	"bytes"
	"context"
	"encoding/json"
	"fmt"
	"os"
	"strconv"
	"strings"
	"sync"
	"syscall"
	"testing"
	"time"

	"go.starlark.net/starlark"
)

// The benchmarks behind docs/RATIONALE.md, Starlark: a call through the
// pool against the same call made in-process with starlark-go, for a
// trivial function (the pool's overhead) and for a 3-million-iteration
// loop (the interpreter's speed in a child).
//
//	go test -run '^$' -bench . -benchtime 2s -count 5 ./internal/starlarkrun/

const loopScript = `
def loop(n):
    s = 0
    for i in range(n):
        s += i
    return s
`

func BenchmarkTrivial(b *testing.B) {
	b.Run("in-process", func(b *testing.B) { benchInProcess(b, addScript, "add", "[1, 2]", "3") })
	b.Run("pool", func(b *testing.B) { benchPool(b, addScript, "add", "[1, 2]", "3") })
}

func BenchmarkLoop3M(b *testing.B) {
	b.Run("in-process", func(b *testing.B) { benchInProcess(b, loopScript, "loop", "[3000000]", "4499998500000") })
	b.Run("pool", func(b *testing.B) { benchPool(b, loopScript, "loop", "[3000000]", "4499998500000") })
}

// benchInProcess calls fn as a child does, JSON in and out, but in this
// process, with no pipe.
func benchInProcess(b *testing.B, src, fn, args, want string) {
	_, prog, err := compile("bench.star", []byte(src))
	if err != nil {
		b.Fatal(err)
	}
	predeclared := starlark.StringDict{"log": starlark.None}
	for k, v := range libraryModules {
		predeclared[k] = v
	}
	globals, err := prog.Init(&starlark.Thread{}, predeclared)
	if err != nil {
		b.Fatal(err)
	}
	globals.Freeze()
	f := globals[fn]
	cpu := startCPU(b, nil)
	for b.Loop() {
		a, kw, err := decodeArgs([]byte(args))
		if err != nil {
			b.Fatal(err)
		}
		v, err := starlark.Call(&starlark.Thread{}, f, a, kw)
		if err != nil {
			b.Fatal(err)
		}
		out, err := encodeJSON(v, 1<<20)
		if err != nil || string(out) != want {
			b.Fatalf("got %s, %v", out, err)
		}
	}
	cpu.report()
}

func benchPool(b *testing.B, src, fn, args, want string) {
	p := newPool(b, testConfig(b))
	req := Request{Source: []byte(src), Function: fn, Args: json.RawMessage(args)}
	ctx := context.Background()
	if _, err := p.Call(ctx, req); err != nil { // load the script
		b.Fatal(err)
	}
	cpu := startCPU(b, p)
	for b.Loop() {
		out, err := p.Call(ctx, req)
		if err != nil || string(out) != want {
			b.Fatalf("got %s, %v", out, err)
		}
	}
	cpu.report()
}

// cpuMeter reports the CPU time per operation of this process and of a
// pool's children, which varies less than wall time on a shared machine.
type cpuMeter struct {
	b          *testing.B
	p          *Pool
	self, kids time.Duration
}

func startCPU(b *testing.B, p *Pool) *cpuMeter {
	m := &cpuMeter{b: b, p: p}
	m.self, m.kids = selfCPU(), childrenCPU(p)
	return m
}

func (m *cpuMeter) report() {
	n := float64(m.b.N)
	m.b.ReportMetric(float64(selfCPU()-m.self)/n, "parent-cpu-ns/op")
	if m.p != nil {
		m.b.ReportMetric(float64(childrenCPU(m.p)-m.kids)/n, "child-cpu-ns/op")
	}
}

func selfCPU() time.Duration {
	var ru syscall.Rusage
	syscall.Getrusage(syscall.RUSAGE_SELF, &ru)
	return time.Duration(ru.Utime.Nano() + ru.Stime.Nano())
}

// childrenCPU is the CPU time of p's live children, from /proc (in clock
// ticks of 10 ms).
func childrenCPU(p *Pool) time.Duration {
	if p == nil {
		return 0
	}
	var total time.Duration
	for _, proc := range p.sup.Children() {
		stat, err := os.ReadFile(fmt.Sprintf("/proc/%d/stat", proc.ready.PID))
		if err != nil {
			continue
		}
		// Fields after the command name, which is in parentheses: utime
		// and stime are the 12th and 13th.
		fields := strings.Fields(string(stat[bytes.LastIndexByte(stat, ')')+1:]))
		utime, _ := strconv.Atoi(fields[11])
		stime, _ := strconv.Atoi(fields[12])
		total += time.Duration(utime+stime) * 10 * time.Millisecond
	}
	return total
}

// BenchmarkPoolParallel is calls from many goroutines over two children.
func BenchmarkPoolParallel(b *testing.B) {
	cfg := testConfig(b)
	cfg.MaxChildren = 2
	cfg.WarmChildren = 2
	p := newPool(b, cfg)
	req := Request{Source: []byte(addScript), Function: "add", Args: json.RawMessage("[1, 2]")}
	b.RunParallel(func(pb *testing.PB) {
		for pb.Next() {
			if out, err := p.Call(context.Background(), req); err != nil || string(out) != "3" {
				b.Errorf("got %s, %v", out, err)
				return
			}
		}
	})
}

// BenchmarkStart is starting a child and its first call of a script.
func BenchmarkStart(b *testing.B) {
	cfg := testConfig(b)
	cfg.WarmChildren = 0
	for b.Loop() {
		p, err := New(cfg)
		if err != nil {
			b.Fatal(err)
		}
		if out, err := p.Call(context.Background(), Request{Source: []byte(addScript), Function: "add", Args: json.RawMessage("[1, 2]")}); err != nil || string(out) != "3" {
			b.Fatalf("got %s, %v", out, err)
		}
		p.Close()
	}
}

// BenchmarkCheck is Check of a script at the default MaxSource (256 KiB)
// that is one long expression, the costliest shape for the compiler.
func BenchmarkCheck(b *testing.B) {
	src := []byte("def f():\n    return " + strings.Repeat("1+", 128*KiB-20) + "1\n")
	b.ReportAllocs()
	for b.Loop() {
		if err := Check("big.star", src, "f"); err != nil {
			b.Fatal(err)
		}
	}
}

// BenchmarkLongCallBesideShortFlood is bob's call of a loop that computes
// for about 100 ms while eve keeps short calls (a few milliseconds of
// computing each) running on every child she may hold: the case where
// moving long calls to the idle class, alone, would starve bob. With
// idle-after-10ms eve is heavy, so her calls run idle too and bob's share
// is what it is with the class off.
func BenchmarkLongCallBesideShortFlood(b *testing.B) {
	for _, bc := range []struct {
		name      string
		idleAfter time.Duration
	}{{"class-off", 0}, {"idle-after-10ms", 10 * time.Millisecond}} {
		b.Run(bc.name, func(b *testing.B) {
			cfg := testConfig(b)
			cfg.MaxChildren, cfg.WarmChildren, cfg.IdleAfter = 4, 4, bc.idleAfter
			p := newPool(b, cfg)
			ctx, stop := context.WithCancel(context.Background())
			var flood sync.WaitGroup
			for range 4 {
				flood.Go(func() {
					for ctx.Err() == nil {
						p.Call(ctx, Request{Source: []byte(loopScript), Function: "loop", Args: json.RawMessage("[20000]"), Caller: "eve"})
					}
				})
			}
			defer func() { stop(); flood.Wait() }()
			time.Sleep(2 * loadWindow) // eve's average settles
			req := Request{Source: []byte(loopScript), Function: "loop", Args: json.RawMessage("[300000]"), Caller: "bob"}
			b.ResetTimer()
			for range b.N {
				if _, err := p.Call(context.Background(), req); err != nil {
					b.Fatal(err)
				}
			}
		})
	}
}
