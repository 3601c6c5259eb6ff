package sandbox

import (
	"bytes"
	"context"
	"math/rand/v2"
	"testing"
	"time"

	"github.com/tetratelabs/wazero"
)

// TestMergeDataSegments checks that a merged module lays out the same
// memory as the original: random segments (some adjacent, some a few bytes
// apart, some far), each module instantiated by wazero and its memory
// compared byte for byte.
func TestMergeDataSegments(t *testing.T) {
	ctx := context.Background()
	rt := wazero.NewRuntime(ctx)
	defer rt.Close(ctx)
	memoryOf := func(t *testing.T, wasm []byte) []byte {
		t.Helper()
		mod, err := rt.Instantiate(ctx, wasm)
		if err != nil {
			t.Fatal(err)
		}
		defer mod.Close(ctx)
		mem, _ := mod.Memory().Read(0, mod.Memory().Size())
		return bytes.Clone(mem)
	}
	rng := rand.New(rand.NewPCG(1, 2))
	for i := range 50 {
		const pages = 4
		var segs []dataSegment
		off := uint32(rng.IntN(64))
		for off < pages*pageSize-256 && len(segs) < 200 {
			init := make([]byte, 1+rng.IntN(200))
			for j := range init {
				init[j] = byte(1 + rng.IntN(255))
			}
			segs = append(segs, dataSegment{offset: off, init: init})
			off += uint32(len(init))
			switch rng.IntN(3) {
			case 0: // adjacent
			case 1:
				off += uint32(rng.IntN(mergeGap + 1)) // merged across the gap
			case 2:
				off += mergeGap + 1 + uint32(rng.IntN(4*KiB)) // kept apart
			}
		}
		rng.Shuffle(len(segs), func(i, j int) { segs[i], segs[j] = segs[j], segs[i] }) // order does not matter without overlap
		m := wasmModule{memoryPages: pages, funcs: []wasmFunc{{export: "run", results: []byte{i32}, body: bodyReturnZero}}, data: segs}
		original := m.bytes()
		merged := mergeDataSegments(original)
		if bytes.Equal(merged, original) {
			t.Fatalf("module %d: %d segments not merged", i, len(segs))
		}
		if !bytes.Equal(memoryOf(t, original), memoryOf(t, merged)) {
			t.Fatalf("module %d: merged memory differs from the original's", i)
		}
		if !bytes.Equal(memoryOf(t, mergeDataSegments(merged)), memoryOf(t, original)) {
			t.Fatalf("module %d: merged twice, its memory differs from the original's", i)
		}
	}
}

// TestMergeDataSegmentsLeavesAlone lists the modules that are returned as
// they are.
func TestMergeDataSegmentsLeavesAlone(t *testing.T) {
	seg := func(off uint32, b string) dataSegment { return dataSegment{offset: off, init: []byte(b)} }
	base := wasmModule{memoryPages: 1, funcs: []wasmFunc{{export: "run", results: []byte{i32}, body: bodyReturnZero}}}
	with := func(segs ...dataSegment) []byte { m := base; m.data = segs; return m.bytes() }
	for name, wasm := range map[string][]byte{
		"no data":     base.bytes(),
		"one segment": with(seg(0, "abc")),
		"far apart":   with(seg(0, "abc"), seg(10*KiB, "def")),
		"overlapping": with(seg(0, "abcdef"), seg(3, "xyz")),
		"not wasm":    []byte("not a module at all"),
		"truncated":   with(seg(0, "abc"), seg(4, "def"))[:40],
		"data count":  append(with(seg(0, "abc"), seg(4, "def")), 12, 1, 2),
	} {
		if got := mergeDataSegments(wasm); !bytes.Equal(got, wasm) {
			t.Errorf("%s: changed", name)
		}
	}
}

// TestMergeGoGuest merges a real Go guest and calls it.
func TestMergeGoGuest(t *testing.T) {
	wasm := guestWasm(t, goAdd)
	merged := mergeDataSegments(wasm)
	if len(merged) == len(wasm) && bytes.Equal(merged, wasm) {
		t.Fatal("the Go guest's data segments were not merged")
	}
	segs := func(b []byte) int {
		_, _, s, _ := dataSection(b)
		return len(s)
	}
	t.Logf("go-add: %d data segments, %d merged; %d bytes, %d merged", segs(wasm), segs(merged), len(wasm), len(merged))
	r := newTestRuntime(t, DefaultConfig())
	m := load(t, r, wasm, Spec{Export: "add"})
	if got := call(t, m, "[20, 22]"); got != "42" {
		t.Fatalf("add(20, 22) = %q", got)
	}
}

// TestMergeDataSegmentsBounded checks that many empty segments a gap apart
// do not make the merge write out more zeros than the module's size.
func TestMergeDataSegmentsBounded(t *testing.T) {
	var segs []dataSegment
	for i := range 20000 {
		segs = append(segs, dataSegment{offset: uint32(i) * mergeGap})
	}
	m := wasmModule{memoryPages: 1000, funcs: []wasmFunc{{export: "run", results: []byte{i32}, body: bodyReturnZero}}, data: segs}
	wasm := m.bytes()
	if merged := mergeDataSegments(wasm); len(merged) > 3*len(wasm) {
		t.Fatalf("a %d-byte module became %d bytes", len(wasm), len(merged))
	}
}

// FuzzMergeDataSegments checks the rewrite on any bytes: the merged module
// is valid exactly when the original is (it decodes, validates and
// instantiates), and when it is, its memory holds the same bytes after
// instantiation. The seeds, which plain go test runs, are modules of the
// tests above and their edge cases.
func FuzzMergeDataSegments(f *testing.F) {
	seg := func(off uint32, b string) dataSegment { return dataSegment{offset: off, init: []byte(b)} }
	base := wasmModule{memoryPages: 1, funcs: []wasmFunc{{export: "run", results: []byte{i32}, body: bodyReturnZero}}}
	with := func(segs ...dataSegment) []byte { m := base; m.data = segs; return m.bytes() }
	for _, wasm := range [][]byte{
		base.bytes(),
		with(seg(0, "abc")),
		with(seg(0, "abc"), seg(4, "def")),
		with(seg(8, "abc"), seg(0, "def"), seg(mergeGap+11, "g")),
		with(seg(0, "abc"), seg(10*KiB, "def")),
		with(seg(0, "abcdef"), seg(3, "xyz")),
		with(seg(0, "abc"), seg(3, "")),
		with(seg(pageSize-2, "ab"), seg(pageSize-4, "cd")),
		with(seg(pageSize-1, "ab"), seg(0, "cd")), // out of bounds: invalid both ways
		with(seg(0, "abc"), seg(4, "def"))[:40],
		append(with(seg(0, "abc"), seg(4, "def")), 12, 1, 2),
		[]byte("not a module at all"),
	} {
		f.Add(wasm)
	}
	ctx := context.Background()
	// The interpreter compiles fast; small memories keep a fuzzed module's
	// declared size from costing gigabytes; a start function that loops is
	// stopped by the context.
	rt := wazero.NewRuntimeWithConfig(ctx, wazero.NewRuntimeConfigInterpreter().
		WithMemoryLimitPages(64).WithCloseOnContextDone(true))
	f.Cleanup(func() { rt.Close(ctx) })
	instantiate := func(wasm []byte) ([]byte, error) {
		ctx, cancel := context.WithTimeout(ctx, 5*time.Second)
		defer cancel()
		mod, err := rt.InstantiateWithConfig(ctx, wasm, wazero.NewModuleConfig().WithName(""))
		if err != nil {
			return nil, err
		}
		defer mod.Close(ctx)
		if mod.Memory() == nil {
			return nil, nil
		}
		mem, _ := mod.Memory().Read(0, mod.Memory().Size())
		return bytes.Clone(mem), nil
	}
	f.Fuzz(func(t *testing.T, wasm []byte) {
		merged := mergeDataSegments(wasm)
		if bytes.Equal(merged, wasm) {
			return
		}
		want, errOriginal := instantiate(wasm)
		got, errMerged := instantiate(merged)
		switch {
		case (errOriginal == nil) != (errMerged == nil):
			t.Fatalf("the original instantiates with error %v, the merged module with %v", errOriginal, errMerged)
		case errOriginal == nil && !bytes.Equal(got, want):
			t.Fatal("the merged module's memory differs from the original's")
		}
	})
}
