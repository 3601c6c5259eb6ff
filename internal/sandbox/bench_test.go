package sandbox

import (
	"bufio"
	"context"
	"encoding/binary"
	"encoding/json"
	"io"
	"os"
	"os/exec"
	"path/filepath"
	"slices"
	"strconv"
	"testing"
)

// The figures these give on the project's machine, and the command, are in
// docs/rationale-sandbox.md.

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
		{"go-add", "add", func(b *testing.B) []byte { return guestWasm(b, goAdd) }, []byte("[1, 2]")},
		{"rust-count-vowels", "count_vowels", func(b *testing.B) []byte { return extismPlugin(b, "count_vowels.wasm") }, []byte("Hello, World")},
		{"go-echo-1KiB", "echo", func(b *testing.B) []byte { return guestWasm(b, hostileGuest) }, make([]byte, 1*KiB)},
		{"go-echo-64KiB", "echo", func(b *testing.B) []byte { return guestWasm(b, hostileGuest) }, make([]byte, 64*KiB)},
	}
	for _, deadlines := range []bool{true, false} {
		cfg := DefaultConfig()
		cfg.noCloseOnContextDone = !deadlines
		r := newTestRuntime(b, cfg)
		for _, c := range cases {
			b.Run(c.name+"/closeOnDone="+strconv.FormatBool(deadlines), func(b *testing.B) {
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
// and closing the instance.
func BenchmarkColdCall(b *testing.B) {
	cases := []struct {
		name, export string
		wasm         func(b *testing.B) []byte
		input        []byte
	}{
		{"go-add", "add", func(b *testing.B) []byte { return guestWasm(b, goAdd) }, []byte("[1, 2]")},
		{"rust-count-vowels", "count_vowels", func(b *testing.B) []byte { return extismPlugin(b, "count_vowels.wasm") }, []byte("Hello, World")},
	}
	r := newTestRuntime(b, DefaultConfig())
	for _, c := range cases {
		b.Run(c.name, func(b *testing.B) {
			m := load(b, r, c.wasm(b), Spec{Export: c.export})
			defer m.Close(context.Background())
			ctx := context.Background()
			for b.Loop() {
				inst, err := m.newInstance(ctx)
				if err != nil {
					b.Fatal(err)
				}
				if _, _, err := inst.run(ctx, c.input); err != nil {
					b.Fatal(err)
				}
				m.put(ctx, inst, false)
			}
		})
	}
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

// BenchmarkCPU runs a CPU-bound loop natively and in a Go guest, with and
// without the deadline checks that WithCloseOnContextDone compiles into
// every loop.
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
	for _, deadlines := range []bool{false, true} {
		b.Run("wasm/closeOnDone="+strconv.FormatBool(deadlines), func(b *testing.B) {
			cfg := DefaultConfig()
			cfg.noCloseOnContextDone = !deadlines
			r := newTestRuntime(b, cfg)
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

// TestChildEcho is no test: BenchmarkChildRoundTrip runs it as a child
// process, which echoes length-prefixed frames from stdin to stdout.
func TestChildEcho(t *testing.T) {
	if os.Getenv("SANDBOX_CHILD_ECHO") != "1" {
		t.Skip("the child process of BenchmarkChildRoundTrip")
	}
	in, out := bufio.NewReader(os.Stdin), bufio.NewWriter(os.Stdout)
	var header [4]byte
	var buf []byte
	for {
		if _, err := io.ReadFull(in, header[:]); err != nil {
			os.Exit(0)
		}
		buf = slices.Grow(buf[:0], int(binary.LittleEndian.Uint32(header[:])))[:binary.LittleEndian.Uint32(header[:])]
		if _, err := io.ReadFull(in, buf); err != nil {
			os.Exit(1)
		}
		out.Write(header[:])
		out.Write(buf)
		out.Flush()
	}
}

// BenchmarkChildRoundTrip is the floor of running calls in a supervised
// child process: one request and one reply over pipes.
func BenchmarkChildRoundTrip(b *testing.B) {
	cmd := exec.Command(os.Args[0], "-test.run=^TestChildEcho$")
	cmd.Env = append(os.Environ(), "SANDBOX_CHILD_ECHO=1")
	stdin, err := cmd.StdinPipe()
	if err != nil {
		b.Fatal(err)
	}
	stdout, err := cmd.StdoutPipe()
	if err != nil {
		b.Fatal(err)
	}
	if err := cmd.Start(); err != nil {
		b.Fatal(err)
	}
	defer cmd.Wait()
	defer stdin.Close()
	in := bufio.NewReader(stdout)
	frame := binary.LittleEndian.AppendUint32(nil, 6)
	frame = append(frame, "[1, 2]"...)
	reply := make([]byte, len(frame))
	for b.Loop() {
		if _, err := stdin.Write(frame); err != nil {
			b.Fatal(err)
		}
		if _, err := io.ReadFull(in, reply); err != nil {
			b.Fatal(err)
		}
	}
}

// TestChildRunner is no test: the child-process benchmarks run it as a
// prototype of a supervised runner. It loads the module named by its
// environment with deadline checks off, writes one byte when ready, then
// serves calls: a length-prefixed input in, a status byte and a
// length-prefixed output out.
func TestChildRunner(t *testing.T) {
	wasmPath := os.Getenv("SANDBOX_CHILD_WASM")
	if wasmPath == "" {
		t.Skip("the child process of BenchmarkChildCall")
	}
	ctx := context.Background()
	wasm, err := os.ReadFile(wasmPath)
	if err != nil {
		os.Exit(2)
	}
	cfg := DefaultConfig()
	cfg.CacheDir = os.Getenv("SANDBOX_CHILD_CACHE")
	cfg.noCloseOnContextDone = true // the parent kills the process instead
	r, err := NewRuntime(ctx, cfg)
	if err != nil {
		os.Exit(2)
	}
	host, _ := testHost()
	m, err := r.Load(ctx, wasm, Spec{Export: os.Getenv("SANDBOX_CHILD_EXPORT"), Concurrency: 1}, host)
	if err != nil {
		os.Exit(2)
	}
	in, out := bufio.NewReader(os.Stdin), bufio.NewWriter(os.Stdout)
	out.WriteByte(1)
	out.Flush()
	var header [4]byte
	var buf []byte
	for {
		if _, err := io.ReadFull(in, header[:]); err != nil {
			os.Exit(0)
		}
		n := binary.LittleEndian.Uint32(header[:])
		buf = slices.Grow(buf[:0], int(n))[:n]
		if _, err := io.ReadFull(in, buf); err != nil {
			os.Exit(1)
		}
		result, err := m.Call(ctx, buf)
		status := byte(0)
		if err != nil {
			status, result = 1, []byte(err.Error())
		}
		out.WriteByte(status)
		out.Write(binary.LittleEndian.AppendUint32(header[:0], uint32(len(result))))
		out.Write(result)
		out.Flush()
	}
}

// childRunner is the parent's end of a TestChildRunner process.
type childRunner struct {
	cmd   *exec.Cmd
	stdin io.WriteCloser
	out   *bufio.Reader
}

func startChildRunner(b *testing.B, wasmPath, cacheDir, export string) *childRunner {
	cmd := exec.Command(os.Args[0], "-test.run=^TestChildRunner$")
	cmd.Env = append(os.Environ(), "SANDBOX_CHILD_WASM="+wasmPath, "SANDBOX_CHILD_CACHE="+cacheDir, "SANDBOX_CHILD_EXPORT="+export)
	stdin, err := cmd.StdinPipe()
	if err != nil {
		b.Fatal(err)
	}
	stdout, err := cmd.StdoutPipe()
	if err != nil {
		b.Fatal(err)
	}
	if err := cmd.Start(); err != nil {
		b.Fatal(err)
	}
	c := &childRunner{cmd: cmd, stdin: stdin, out: bufio.NewReader(stdout)}
	if ready, err := c.out.ReadByte(); err != nil || ready != 1 {
		b.Fatalf("child runner did not start: %v", err)
	}
	return c
}

func (c *childRunner) call(b *testing.B, input []byte) []byte {
	frame := binary.LittleEndian.AppendUint32(nil, uint32(len(input)))
	if _, err := c.stdin.Write(append(frame, input...)); err != nil {
		b.Fatal(err)
	}
	status, err := c.out.ReadByte()
	var header [4]byte
	if err == nil {
		_, err = io.ReadFull(c.out, header[:])
	}
	out := make([]byte, binary.LittleEndian.Uint32(header[:]))
	if err == nil {
		_, err = io.ReadFull(c.out, out)
	}
	if err != nil || status != 0 {
		b.Fatalf("child call: %v %s", err, out)
	}
	return out
}

func (c *childRunner) kill() {
	c.cmd.Process.Kill()
	c.cmd.Wait()
}

// childFixture writes the go-add guest to a file and fills a disk cache
// with its compiled code (deadline checks off), for the child runners.
func childFixture(b *testing.B) (wasmPath, cacheDir string) {
	dir := b.TempDir()
	wasmPath = filepath.Join(dir, "add.wasm")
	if err := os.WriteFile(wasmPath, guestWasm(b, goAdd), 0o600); err != nil {
		b.Fatal(err)
	}
	cacheDir = filepath.Join(dir, "cache")
	c := startChildRunner(b, wasmPath, cacheDir, "add")
	c.kill()
	return wasmPath, cacheDir
}

// BenchmarkChildCall is a warm call of go-add in a prototype supervised
// child process: the pipe round trip plus the call without deadline checks.
func BenchmarkChildCall(b *testing.B) {
	wasmPath, cacheDir := childFixture(b)
	c := startChildRunner(b, wasmPath, cacheDir, "add")
	defer c.kill()
	input := []byte("[1, 2]")
	c.call(b, input)
	for b.Loop() {
		if out := c.call(b, input); string(out) != "3" {
			b.Fatalf("got %s", out)
		}
	}
}

// BenchmarkChildRespawn is what a timeout costs a child-process runner
// before it serves again: kill the child, start a new one (compiled code
// from the disk cache), make the first call.
func BenchmarkChildRespawn(b *testing.B) {
	wasmPath, cacheDir := childFixture(b)
	input := []byte("[1, 2]")
	for b.Loop() {
		c := startChildRunner(b, wasmPath, cacheDir, "add")
		c.call(b, input)
		c.kill()
	}
}
