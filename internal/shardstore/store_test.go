package shardstore

import (
	"bytes"
	"context"
	"errors"
	"fmt"
	"io"
	"io/fs"
	"math/rand/v2"
	"os"
	"path/filepath"
	"slices"
	"strings"
	"sync"
	"testing"
	"testing/iotest"
	"time"
)

// newStore opens a store in a fresh directory. At cleanup it checks the invariants every test must leave:
// the store closes, no temp file survives a finished Put, and the directory opens again.
func newStore(t *testing.T, mutate ...func(*Config)) (*Store, string) {
	t.Helper()
	dir := t.TempDir()
	cfg := DefaultConfig(dir)
	for _, m := range mutate {
		m(&cfg)
	}
	s, err := Open(cfg)
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() {
		if err := s.Close(); err != nil {
			t.Errorf("close: %v", err)
		}
		if temps := tempFiles(t, dir); len(temps) > 0 {
			t.Errorf("temp files left after all writes finished: %v", temps)
		}
		again, err := Open(cfg)
		if err != nil {
			t.Errorf("reopen: %v", err)
			return
		}
		again.Close()
	})
	return s, dir
}

func tempFiles(t testing.TB, dir string) []string {
	t.Helper()
	var found []string
	filepath.WalkDir(dir, func(p string, d fs.DirEntry, err error) error {
		if err == nil && strings.HasPrefix(d.Name(), tempPrefix) {
			found = append(found, p)
		}
		return nil
	})
	return found
}

func key(file string, block int64, shard int) Key {
	return Key{FileID: file, WriteID: "w1", Block: block, Shard: shard}
}

func payload(seed uint64, n int) []byte {
	b := make([]byte, n)
	rng := rand.New(rand.NewPCG(seed, uint64(n)))
	for i := range b {
		b[i] = byte(rng.Uint32())
	}
	return b
}

func put(t testing.TB, s *Store, k Key, data []byte) Info {
	t.Helper()
	info, err := s.Put(context.Background(), k, bytes.NewReader(data))
	if err != nil {
		t.Fatal(err)
	}
	return info
}

func TestPutGet(t *testing.T) {
	s, _ := newStore(t)
	for _, size := range []int{0, 1, 4095, 1<<20 + 3} {
		t.Run(fmt.Sprint(size), func(t *testing.T) {
			k := key("file-a", int64(size), 3)
			data := payload(1, size)
			info := put(t, s, k, data)
			if info.Size != int64(size) || info.Key != k {
				t.Fatalf("Put returned %+v", info)
			}
			got, ginfo, err := s.Get(t.Context(), k)
			if err != nil || !bytes.Equal(got, data) {
				t.Fatalf("Get: %v, equal=%v", err, bytes.Equal(got, data))
			}
			if ginfo.Checksum != info.Checksum || ginfo.Size != info.Size {
				t.Fatalf("Get info %+v, Put info %+v", ginfo, info)
			}
			for name, f := range map[string]func(context.Context, Key) (Info, error){"Stat": s.Stat, "Verify": s.Verify} {
				if i, err := f(t.Context(), k); err != nil || i.Size != info.Size || i.Checksum != info.Checksum {
					t.Fatalf("%s: %+v, %v", name, i, err)
				}
			}
		})
	}
	t.Run("overwrite", func(t *testing.T) {
		k := key("file-b", 0, 0)
		put(t, s, k, []byte("old"))
		put(t, s, k, []byte("new and longer"))
		if got, _, _ := s.Get(t.Context(), k); string(got) != "new and longer" {
			t.Fatalf("got %q", got)
		}
	})
	t.Run("reader in small pieces", func(t *testing.T) {
		k := key("file-c", 0, 0)
		data := payload(2, 100_000)
		if _, err := s.Put(t.Context(), k, iotest.OneByteReader(bytes.NewReader(data[:1000]))); err != nil {
			t.Fatal(err)
		}
		if _, err := s.Put(t.Context(), k, iotest.HalfReader(bytes.NewReader(data))); err != nil {
			t.Fatal(err)
		}
		if got, _, _ := s.Get(t.Context(), k); !bytes.Equal(got, data) {
			t.Fatal("differs")
		}
	})
}

func TestNotFoundAndDelete(t *testing.T) {
	s, _ := newStore(t)
	k := key("f", 1, 2)
	if _, _, err := s.Get(t.Context(), k); !errors.Is(err, ErrNotFound) {
		t.Fatalf("Get of nothing: %v", err)
	}
	if _, err := s.Stat(t.Context(), k); !errors.Is(err, ErrNotFound) {
		t.Fatalf("Stat of nothing: %v", err)
	}
	if err := s.Delete(t.Context(), k); err != nil {
		t.Fatalf("Delete of nothing: %v", err)
	}
	put(t, s, k, []byte("x"))
	if err := s.Delete(t.Context(), k); err != nil {
		t.Fatal(err)
	}
	if _, _, err := s.Get(t.Context(), k); !errors.Is(err, ErrNotFound) {
		t.Fatalf("Get after Delete: %v", err)
	}
}

// TestHostileKeys: no key reaches outside the store; each is refused with ErrInvalidKey by every method.
func TestHostileKeys(t *testing.T) {
	outer := t.TempDir()
	dir := filepath.Join(outer, "store")
	s, err := Open(DefaultConfig(dir))
	if err != nil {
		t.Fatal(err)
	}
	defer s.Close()
	bad := []Key{
		{FileID: "../escape", WriteID: "w", Block: 0, Shard: 0},
		{FileID: "..", WriteID: "w"},
		{FileID: ".", WriteID: "w"},
		{FileID: "a/b", WriteID: "w"},
		{FileID: `a\b`, WriteID: "w"},
		{FileID: "/etc", WriteID: "w"},
		{FileID: "f", WriteID: "../../x"},
		{FileID: "f", WriteID: ".tmp-abc"},
		{FileID: "f", WriteID: ""},
		{FileID: "", WriteID: "w"},
		{FileID: "nul\x00byte", WriteID: "w"},
		{FileID: "space here", WriteID: "w"},
		{FileID: "ünïcode", WriteID: "w"},
		{FileID: strings.Repeat("a", MaxIDLen+1), WriteID: "w"},
		{FileID: "f", WriteID: "w", Block: -1},
		{FileID: "f", WriteID: "w", Shard: -1},
		{FileID: "f", WriteID: "w", Shard: MaxShard + 1},
	}
	ctx := t.Context()
	for _, k := range bad {
		t.Run(fmt.Sprintf("%q", k.String()), func(t *testing.T) {
			_, putErr := s.Put(ctx, k, strings.NewReader("payload"))
			_, _, getErr := s.Get(ctx, k)
			_, statErr := s.Stat(ctx, k)
			_, verifyErr := s.Verify(ctx, k)
			delErr := s.Delete(ctx, k)
			for name, err := range map[string]error{"Put": putErr, "Get": getErr, "Stat": statErr, "Verify": verifyErr, "Delete": delErr} {
				if !errors.Is(err, ErrInvalidKey) {
					t.Errorf("%s: %v, want ErrInvalidKey", name, err)
				}
			}
		})
	}
	for k, err := range s.List(ctx, "../x") {
		if !errors.Is(err, ErrInvalidKey) {
			t.Fatalf("List(../x) yielded %v, %v", k, err)
		}
	}
	entries, _ := os.ReadDir(outer)
	if len(entries) != 1 || entries[0].Name() != "store" {
		t.Fatalf("something was created beside the store: %v", entries)
	}
	var files []string
	filepath.WalkDir(dir, func(p string, d fs.DirEntry, _ error) error {
		if !d.IsDir() && d.Name() != "LOCK" {
			files = append(files, p)
		}
		return nil
	})
	if len(files) > 0 {
		t.Fatalf("hostile keys created files: %v", files)
	}
}

func TestPutFailuresLeaveNothing(t *testing.T) {
	s, dir := newStore(t, func(c *Config) { c.MaxShardSize = 1000 })
	k := key("f", 0, 0)
	put(t, s, k, []byte("previous"))
	canceled, cancel := context.WithCancel(t.Context())
	cancel()
	boom := errors.New("boom")
	for name, tc := range map[string]struct {
		ctx  context.Context
		r    io.Reader
		want error
	}{
		"too large":      {t.Context(), bytes.NewReader(make([]byte, 1001)), ErrTooLarge},
		"reader fails":   {t.Context(), io.MultiReader(strings.NewReader("part"), iotest.ErrReader(boom)), boom},
		"context cancel": {canceled, strings.NewReader("x"), context.Canceled},
	} {
		t.Run(name, func(t *testing.T) {
			if _, err := s.Put(tc.ctx, k, tc.r); !errors.Is(err, tc.want) {
				t.Fatalf("got %v, want %v", err, tc.want)
			}
			if temps := tempFiles(t, dir); len(temps) > 0 {
				t.Fatalf("temp files left: %v", temps)
			}
			if got, _, err := s.Get(t.Context(), k); err != nil || string(got) != "previous" {
				t.Fatalf("the previous shard was damaged: %q, %v", got, err)
			}
		})
	}
	if _, err := s.Put(t.Context(), key("f", 0, 1), bytes.NewReader(make([]byte, 1000))); err != nil {
		t.Fatalf("exactly MaxShardSize refused: %v", err)
	}
}

// corruptions are ways a shard file goes bad on disk; each must be caught.
var corruptions = []struct {
	name string
	do   func(t *testing.T, path string, hdr int)
}{
	{"payload byte flipped", func(t *testing.T, p string, h int) { flipByte(t, p, int64(h)+500) }},
	{"first payload byte flipped", func(t *testing.T, p string, h int) { flipByte(t, p, int64(h)) }},
	{"last payload byte flipped", func(t *testing.T, p string, h int) { flipByte(t, p, size(t, p)-footerLen-1) }},
	{"header magic flipped", func(t *testing.T, p string, h int) { flipByte(t, p, 0) }},
	{"header key byte flipped", func(t *testing.T, p string, h int) { flipByte(t, p, fixedHeaderLen) }},
	{"header block flipped", func(t *testing.T, p string, h int) { flipByte(t, p, 12) }},
	{"header checksum flipped", func(t *testing.T, p string, h int) { flipByte(t, p, int64(h)-1) }},
	{"footer length flipped", func(t *testing.T, p string, h int) { flipByte(t, p, size(t, p)-footerLen) }},
	{"footer checksum flipped", func(t *testing.T, p string, h int) { flipByte(t, p, size(t, p)-footerLen+8) }},
	{"footer magic flipped", func(t *testing.T, p string, h int) { flipByte(t, p, size(t, p)-8) }},
	{"truncated to 0", func(t *testing.T, p string, h int) { os.Truncate(p, 0) }},
	{"truncated in header", func(t *testing.T, p string, h int) { os.Truncate(p, int64(h)-3) }},
	{"truncated after header", func(t *testing.T, p string, h int) { os.Truncate(p, int64(h)) }},
	{"truncated mid payload", func(t *testing.T, p string, h int) { os.Truncate(p, int64(h)+2000) }},
	{"footer cut", func(t *testing.T, p string, h int) { os.Truncate(p, size(t, p)-1) }},
	{"byte appended", func(t *testing.T, p string, h int) { appendBytes(t, p, []byte{0}) }},
	{"footer duplicated", func(t *testing.T, p string, h int) {
		b, _ := os.ReadFile(p)
		appendBytes(t, p, b[len(b)-footerLen:])
	}},
	{"page zeroed (lost write)", func(t *testing.T, p string, h int) {
		f, _ := os.OpenFile(p, os.O_WRONLY, 0)
		f.WriteAt(make([]byte, 4096), 4096)
		f.Close()
	}},
	{"another shard's file", func(t *testing.T, p string, h int) {
		other := filepath.Join(filepath.Dir(p), "99.0")
		if err := os.Rename(other, p); err != nil {
			t.Fatal(err)
		}
	}},
}

func flipByte(t *testing.T, path string, off int64) {
	t.Helper()
	f, err := os.OpenFile(path, os.O_RDWR, 0)
	if err != nil {
		t.Fatal(err)
	}
	defer f.Close()
	b := []byte{0}
	if _, err := f.ReadAt(b, off); err != nil {
		t.Fatal(err)
	}
	b[0] ^= 0x01
	if _, err := f.WriteAt(b, off); err != nil {
		t.Fatal(err)
	}
}

func size(t *testing.T, path string) int64 {
	st, err := os.Stat(path)
	if err != nil {
		t.Fatal(err)
	}
	return st.Size()
}

func appendBytes(t *testing.T, path string, b []byte) {
	f, err := os.OpenFile(path, os.O_WRONLY|os.O_APPEND, 0)
	if err != nil {
		t.Fatal(err)
	}
	f.Write(b)
	f.Close()
}

// TestCorruptionIsDetected: a damaged shard file is never returned as good, by Get, Verify or the
// scrubber; the error names the shard.
func TestCorruptionIsDetected(t *testing.T) {
	for _, c := range corruptions {
		t.Run(c.name, func(t *testing.T) {
			s, _ := newStore(t)
			k := key("victim", 7, 2)
			data := payload(3, 10_000)
			put(t, s, k, data)
			put(t, s, key("victim", 99, 0), payload(4, 10_000))
			put(t, s, key("bystander", 0, 0), []byte("fine"))
			c.do(t, s.path(k), headerLen(k))

			_, _, err := s.Get(t.Context(), k)
			var ce *CorruptError
			if !errors.Is(err, ErrCorrupt) || !errors.As(err, &ce) || ce.Key != k {
				t.Fatalf("Get: %v, want a *CorruptError for %s", err, k)
			}
			if _, err := s.Verify(t.Context(), k); !errors.Is(err, ErrCorrupt) {
				t.Fatalf("Verify: %v", err)
			}
			var problems []Problem
			st, err := s.Scrub(t.Context(), ScrubHooks{OnProblem: func(p Problem) { problems = append(problems, p) }})
			if err != nil {
				t.Fatal(err)
			}
			if len(problems) != 1 || problems[0].Key != k || problems[0].Kind != Corrupt || !errors.Is(problems[0].Err, ErrCorrupt) {
				t.Fatalf("scrubber reported %+v, want %s corrupt", problems, k)
			}
			if st.Corrupt != 1 || st.Shards < 1 {
				t.Fatalf("stats %+v", st)
			}
		})
	}
}

func TestScrubReportsMissing(t *testing.T) {
	s, _ := newStore(t)
	for i := range 5 {
		put(t, s, key("f", int64(i), i), payload(uint64(i), 3000))
	}
	flipByte(t, s.path(key("f", 3, 3)), int64(headerLen(key("f", 3, 3)))+10)
	expected := []Key{key("f", 0, 0), key("f", 1, 1), key("f", 9, 1), key("g", 0, 0), key("f", 3, 3)}
	got := map[Key]ProblemKind{}
	st, err := s.Scrub(t.Context(), ScrubHooks{
		OnProblem: func(p Problem) { got[p.Key] = p.Kind },
		Expected:  slices.Values(expected),
	})
	if err != nil {
		t.Fatal(err)
	}
	want := map[Key]ProblemKind{key("f", 3, 3): Corrupt, key("f", 9, 1): Missing, key("g", 0, 0): Missing}
	if fmt.Sprint(got) != fmt.Sprint(want) {
		t.Fatalf("problems %v, want %v", got, want)
	}
	if st.Shards != 4 || st.Bytes != 4*3000 || st.Corrupt != 1 || st.Missing != 2 {
		t.Fatalf("stats %+v", st)
	}
	if _, err := s.Scrub(t.Context(), ScrubHooks{}); err == nil {
		t.Fatal("Scrub without OnProblem accepted")
	}
}

func TestScrubRateLimit(t *testing.T) {
	s, _ := newStore(t, func(c *Config) { c.ScrubRate = 1 << 20 })
	for i := range 3 {
		put(t, s, key("f", int64(i), 0), make([]byte, 200<<10))
	}
	st, err := s.Scrub(t.Context(), ScrubHooks{OnProblem: func(p Problem) { t.Errorf("problem %+v", p) }})
	if err != nil {
		t.Fatal(err)
	}
	// 600 KiB at 1 MiB/s: at least ~0.55 s (the first chunk is free).
	if st.Elapsed < 450*time.Millisecond {
		t.Fatalf("600 KiB scrubbed in %s at 1 MiB/s", st.Elapsed)
	}
}

func TestRunScrubber(t *testing.T) {
	s, _ := newStore(t, func(c *Config) { c.ScrubInterval = time.Second })
	put(t, s, key("f", 0, 0), []byte("hello"))
	ctx, cancel := context.WithCancel(t.Context())
	passes := make(chan ScrubStats, 10)
	done := make(chan error)
	go func() {
		done <- s.RunScrubber(ctx, ScrubHooks{
			OnProblem: func(p Problem) { t.Errorf("problem %+v", p) },
			OnPass:    func(st ScrubStats, err error) { passes <- st },
		})
	}()
	select {
	case st := <-passes:
		if st.Shards != 1 {
			t.Fatalf("first pass %+v", st)
		}
	case <-time.After(10 * time.Second):
		t.Fatal("no pass within 10s; the first should start at once")
	}
	cancel()
	if err := <-done; err != nil {
		t.Fatalf("RunScrubber returned %v after cancel, want nil", err)
	}
}

// TestCloseStopsScrubber: Close does not wait for a slow pass to finish.
func TestCloseStopsScrubber(t *testing.T) {
	dir := t.TempDir()
	cfg := DefaultConfig(dir)
	cfg.ScrubRate = 64 << 10
	s, err := Open(cfg)
	if err != nil {
		t.Fatal(err)
	}
	put(t, s, key("f", 0, 0), make([]byte, 4<<20)) // a minute at 64 KiB/s
	done := make(chan error)
	go func() { done <- s.RunScrubber(t.Context(), ScrubHooks{OnProblem: func(Problem) {}}) }()
	time.Sleep(200 * time.Millisecond)
	start := time.Now()
	s.Close()
	if err := <-done; !errors.Is(err, ErrClosed) {
		t.Fatalf("RunScrubber returned %v, want ErrClosed", err)
	}
	if d := time.Since(start); d > 5*time.Second {
		t.Fatalf("Close took %s", d)
	}
	if _, err := s.Put(t.Context(), key("f", 1, 0), strings.NewReader("x")); !errors.Is(err, ErrClosed) {
		t.Fatalf("Put after Close: %v", err)
	}
}

func TestLock(t *testing.T) {
	s, dir := newStore(t)
	if _, err := Open(DefaultConfig(dir)); !errors.Is(err, ErrLocked) {
		t.Fatalf("second Open: %v, want ErrLocked", err)
	}
	_ = s
}

func TestList(t *testing.T) {
	s, _ := newStore(t)
	var want []Key
	for _, f := range []string{"alpha", "beta", "gamma"} {
		for b := range 3 {
			k := Key{FileID: f, WriteID: "w" + f, Block: int64(b), Shard: b + 1}
			put(t, s, k, []byte(k.String()))
			want = append(want, k)
		}
	}
	collect := func(fileID string) []Key {
		var got []Key
		for k, err := range s.List(t.Context(), fileID) {
			if err != nil {
				t.Fatal(err)
			}
			got = append(got, k)
		}
		slices.SortFunc(got, func(a, b Key) int { return strings.Compare(a.String(), b.String()) })
		return got
	}
	if got := collect(""); !slices.Equal(got, want) {
		t.Fatalf("List all: %v, want %v", got, want)
	}
	if got := collect("beta"); !slices.Equal(got, want[3:6]) {
		t.Fatalf("List beta: %v", got)
	}
	if got := collect("nothing"); len(got) != 0 {
		t.Fatalf("List of an unknown file: %v", got)
	}
	n := 0
	for range s.List(t.Context(), "") {
		n++
		break
	}
	if n != 1 {
		t.Fatal("break did not stop List")
	}
}

func TestGC(t *testing.T) {
	s, dir := newStore(t)
	keep, drop := key("keep", 0, 0), key("drop", 0, 0)
	put(t, s, keep, []byte("keep me"))
	put(t, s, drop, []byte("drop me"))
	put(t, s, key("drop", 1, 0), []byte("drop me too"))
	// A crash's leftovers and a stranger's file.
	orphan := filepath.Join(filepath.Dir(s.path(keep)), tempPrefix+"crashed")
	os.WriteFile(orphan, []byte("half a shard"), 0o644)
	stranger := filepath.Join(filepath.Dir(s.path(keep)), "README")
	os.WriteFile(stranger, []byte("not ours"), 0o644)

	keepSet := func(k Key) bool { return k.FileID == "keep" }
	st, err := s.GC(t.Context(), keepSet, time.Hour)
	if err != nil {
		t.Fatal(err)
	}
	if st.TempFiles != 1 || st.Shards != 0 {
		t.Fatalf("with a 1h grace: %+v; want the temp file only", st)
	}
	st, err = s.GC(t.Context(), keepSet, 0)
	if err != nil {
		t.Fatal(err)
	}
	if st.Shards != 2 || st.ShardBytes == 0 || st.Dirs != 2 {
		t.Fatalf("%+v; want 2 shards and their 2 directories removed", st)
	}
	if _, _, err := s.Get(t.Context(), keep); err != nil {
		t.Fatalf("kept shard: %v", err)
	}
	if _, _, err := s.Get(t.Context(), drop); !errors.Is(err, ErrNotFound) {
		t.Fatalf("dropped shard: %v", err)
	}
	if _, err := os.Stat(stranger); err != nil {
		t.Fatal("GC removed a file it did not write")
	}
	if _, err := os.Stat(filepath.Join(dir, shardsDir, fan("drop"), "drop")); !errors.Is(err, fs.ErrNotExist) {
		t.Fatal("empty directories of the dropped file remain")
	}
	put(t, s, drop, []byte("written again after its directories went"))
}

// blockingReader hands out one byte, then waits until released.
type blockingReader struct {
	started chan struct{}
	release chan struct{}
	sent    bool
}

func (r *blockingReader) Read(p []byte) (int, error) {
	if !r.sent {
		r.sent = true
		p[0] = 'x'
		close(r.started)
		return 1, nil
	}
	<-r.release
	return 0, io.EOF
}

// TestGCLeavesWritesInProgress: a temp file being written is not garbage.
func TestGCLeavesWritesInProgress(t *testing.T) {
	s, _ := newStore(t)
	r := &blockingReader{started: make(chan struct{}), release: make(chan struct{})}
	done := make(chan error)
	go func() {
		_, err := s.Put(t.Context(), key("slow", 0, 0), r)
		done <- err
	}()
	<-r.started
	st, err := s.GC(t.Context(), func(Key) bool { return false }, 0)
	if err != nil || st.TempFiles != 0 || st.Dirs != 0 {
		t.Fatalf("GC during a Put: %+v, %v", st, err)
	}
	close(r.release)
	if err := <-done; err != nil {
		t.Fatal(err)
	}
	if got, _, err := s.Get(t.Context(), key("slow", 0, 0)); err != nil || string(got) != "x" {
		t.Fatalf("%q, %v", got, err)
	}
}

// TestConcurrentUse runs writers, readers, deleters and GC at once; -race checks the store, and every Get
// that succeeds must return exactly what some Put wrote.
func TestConcurrentUse(t *testing.T) {
	s, _ := newStore(t)
	ctx := t.Context()
	valid := func(k Key, b []byte) bool { return bytes.HasPrefix(b, []byte(k.String()+"#")) }
	var wg sync.WaitGroup
	for g := range 4 {
		wg.Go(func() {
			rng := rand.New(rand.NewPCG(uint64(g), 1))
			for i := range 60 {
				k := Key{FileID: fmt.Sprintf("f%d", rng.IntN(3)), WriteID: "w", Block: int64(rng.IntN(4)), Shard: rng.IntN(2)}
				switch rng.IntN(4) {
				case 0, 1:
					data := append([]byte(k.String()+"#"), payload(uint64(i), rng.IntN(5000))...)
					if _, err := s.Put(ctx, k, bytes.NewReader(data)); err != nil {
						t.Error(err)
					}
				case 2:
					got, _, err := s.Get(ctx, k)
					if err == nil && !valid(k, got) || err != nil && !errors.Is(err, ErrNotFound) {
						t.Errorf("Get %s: %v", k, err)
					}
				case 3:
					if err := s.Delete(ctx, k); err != nil {
						t.Error(err)
					}
				}
			}
		})
	}
	wg.Go(func() {
		for range 20 {
			if _, err := s.GC(ctx, func(k Key) bool { return k.Shard == 0 }, 0); err != nil {
				t.Error(err)
			}
		}
	})
	wg.Wait()
	for k, err := range s.List(ctx, "") {
		if err != nil {
			t.Fatal(err)
		}
		if got, _, err := s.Get(ctx, k); err != nil || !valid(k, got) {
			t.Fatalf("%s: %v", k, err)
		}
	}
}

func TestUsage(t *testing.T) {
	s, _ := newStore(t)
	put(t, s, key("u", 0, 0), make([]byte, 1000))
	put(t, s, key("u", 1, 0), make([]byte, 2000))
	u, err := s.Usage(t.Context())
	if err != nil {
		t.Fatal(err)
	}
	overhead := int64(2 * (headerLen(key("u", 0, 0)) + footerLen))
	if u.Shards != 2 || u.ShardBytes != 3000+overhead || u.TempFiles != 0 {
		t.Fatalf("%+v", u)
	}
	if u.DiskTotal == 0 || u.DiskFree == 0 || u.DiskFree > u.DiskTotal {
		t.Fatalf("disk space %+v", u)
	}
}

func TestConfigValidate(t *testing.T) {
	if err := DefaultConfig("/var/lib/taskworker/shards").Validate(); err != nil {
		t.Fatal(err)
	}
	for name, tc := range map[string]struct {
		mutate func(*Config)
		says   string
	}{
		"no dir":          {func(c *Config) { c.Dir = "" }, "Dir is empty"},
		"zero max shard":  {func(c *Config) { c.MaxShardSize = 0 }, "MaxShardSize (0)"},
		"huge max shard":  {func(c *Config) { c.MaxShardSize = 5 << 30 }, "between 1 byte and 4 GiB"},
		"busy scrubber":   {func(c *Config) { c.ScrubInterval = time.Millisecond }, "ScrubInterval (1ms) is below 1s"},
		"slow scrubber":   {func(c *Config) { c.ScrubRate = 1000 }, "ScrubRate (1000 bytes/s)"},
		"several at once": {func(c *Config) { c.Dir, c.ScrubRate = "", 0 }, "ScrubRate (0"},
	} {
		t.Run(name, func(t *testing.T) {
			c := DefaultConfig("/d")
			tc.mutate(&c)
			err := c.Validate()
			if err == nil || !strings.Contains(err.Error(), tc.says) {
				t.Fatalf("got %v, want it to say %q", err, tc.says)
			}
			if _, err := Open(c); err == nil {
				t.Fatal("Open accepted it")
			}
		})
	}
}

// A shard directory deleted under an open store: List sees no shard (which
// is how the pool learns what to rebuild), and the directory is back for
// the next Put, which succeeds.
func TestShardDirectoryDeletedUnderTheStore(t *testing.T) {
	for _, first := range []string{"list", "put"} {
		t.Run(first, func(t *testing.T) {
			s, dir := newStore(t)
			put(t, s, key("alpha", 0, 0), []byte("before"))
			if err := os.RemoveAll(filepath.Join(dir, shardsDir)); err != nil {
				t.Fatal(err)
			}
			if first == "list" {
				for k, err := range s.List(t.Context(), "") {
					t.Fatalf("List after the directory was deleted: %v, %v", k, err)
				}
			}
			put(t, s, key("alpha", 0, 0), []byte("rebuilt"))
			got, _, err := s.Get(t.Context(), key("alpha", 0, 0))
			if err != nil || string(got) != "rebuilt" {
				t.Fatalf("Get after the rebuild: %q, %v", got, err)
			}
		})
	}
}
