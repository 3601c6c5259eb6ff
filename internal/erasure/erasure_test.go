package erasure

import (
	"bytes"
	"context"
	"errors"
	"fmt"
	"io"
	"math/rand/v2"
	"sync"
	"sync/atomic"
	"testing"
	"testing/iotest"
)

// coded is a file encoded in memory: its info and a copy of every shard.
type coded struct {
	info   *FileInfo
	shards [][][]byte // [block][shard]
}

func encode(t testing.TB, data []byte, l Layout, blockSize int) coded {
	t.Helper()
	enc, err := NewEncoder(bytes.NewReader(data), l, blockSize)
	if err != nil {
		t.Fatal(err)
	}
	var c coded
	for {
		b, err := enc.Next()
		if err == io.EOF {
			break
		}
		if err != nil {
			t.Fatal(err)
		}
		if b.Index != int64(len(c.shards)) {
			t.Fatalf("block index %d, want %d", b.Index, len(c.shards))
		}
		shards := make([][]byte, len(b.Shards))
		for i, s := range b.Shards {
			shards[i] = bytes.Clone(s)
		}
		c.shards = append(c.shards, shards)
	}
	if c.info, err = enc.Info(); err != nil {
		t.Fatal(err)
	}
	checkCoded(t, c)
	return c
}

// checkCoded is the invariant every encoding must satisfy: sums match, shard lengths match the geometry,
// and the recorded info validates.
func checkCoded(t testing.TB, c coded) {
	t.Helper()
	if err := c.info.Validate(); err != nil {
		t.Fatalf("encoder produced invalid info: %v", err)
	}
	for b, shards := range c.shards {
		for i, s := range shards {
			if len(s) != c.info.ShardLen(int64(b)) {
				t.Fatalf("block %d shard %d: %d bytes, want %d", b, i, len(s), c.info.ShardLen(int64(b)))
			}
			if SumShard(s) != c.info.Sums[b][i] {
				t.Fatalf("block %d shard %d: sum mismatch", b, i)
			}
		}
	}
}

type damage int

const (
	intact damage = iota
	missing
	flipped   // one byte changed
	truncated // one byte short
	long      // one byte too many
)

// damages is how many kinds of damage there are, for damage(1 + rng.IntN(damages)).
const damages = 4

// memSource serves shards from memory with some of them damaged, and counts fetches.
type memSource struct {
	c       coded
	mu      sync.Mutex
	damaged map[[2]int]damage
	fetches atomic.Int64
}

func (s *memSource) ReadShard(ctx context.Context, block int64, shard int) ([]byte, error) {
	s.fetches.Add(1)
	if err := ctx.Err(); err != nil {
		return nil, err
	}
	s.mu.Lock()
	d := s.damaged[[2]int{int(block), shard}]
	s.mu.Unlock()
	out := bytes.Clone(s.c.shards[block][shard])
	switch d {
	case missing:
		return nil, errors.New("shard not found")
	case flipped:
		out[len(out)/2] ^= 0x5a
	case truncated:
		out = out[:len(out)-1]
	case long:
		out = append(out, 0x5a)
	}
	return out, nil
}

// checkReports makes dec fail t when it reports an intact shard of s bad,
// and returns a check, to run once dec is done, that every damaged data
// shard was reported.
func (s *memSource) checkReports(t *testing.T, dec *Decoder) (allReported func()) {
	reported := map[[2]int]bool{}
	dec.OnBadShard = func(b BadShard) {
		key := [2]int{int(b.Block), b.Shard}
		if s.damaged[key] == intact {
			t.Errorf("intact shard %v reported bad: %v", key, b.Err)
		}
		reported[key] = true
	}
	return func() {
		for key, d := range s.damaged {
			if d != intact && key[1] < s.c.info.Layout.Data && !reported[key] {
				t.Errorf("damaged data shard %v not reported", key)
			}
		}
	}
}

// damageBlocks damages up to maxPerBlock shards of every block at random and returns what it did.
func (s *memSource) damageBlocks(rng *rand.Rand, maxPerBlock int) {
	s.damaged = map[[2]int]damage{}
	for b := range s.c.shards {
		n := rng.IntN(maxPerBlock + 1)
		for _, i := range rng.Perm(len(s.c.shards[b]))[:n] {
			s.damaged[[2]int{b, i}] = damage(1 + rng.IntN(damages))
		}
	}
}

func randomBytes(rng *rand.Rand, n int) []byte {
	b := make([]byte, n)
	for i := range b {
		b[i] = byte(rng.Uint32())
	}
	return b
}

var testLayouts = []Layout{{1, 0}, {1, 1}, {2, 1}, {3, 2}, {4, 2}, {6, 3}, {10, 4}}

// TestRoundTrip is the property test: random data of every awkward size round-trips byte for byte across
// layouts with up to Parity shards of every block missing or corrupt, and every damaged data shard is
// reported.
func TestRoundTrip(t *testing.T) {
	for _, l := range testLayouts {
		for _, bs := range []int{1, 999, 4096} {
			for _, size := range []int{0, 1, 2, bs - 1, bs, bs + 1, 3*bs + 17, 9 * bs} {
				if size < 0 || (bs == 1 && size > 40) {
					continue
				}
				t.Run(fmt.Sprintf("%s/block=%d/size=%d", l, bs, size), func(t *testing.T) {
					t.Parallel()
					rng := rand.New(rand.NewPCG(uint64(size), uint64(bs*1000+l.Shards())))
					data := randomBytes(rng, size)
					c := encode(t, data, l, bs)
					if c.info.Size != int64(size) || c.info.SHA256 != sha256Of(data) {
						t.Fatalf("info: size %d, want %d; or SHA-256 differs", c.info.Size, size)
					}
					src := &memSource{c: c}
					src.damageBlocks(rng, l.Parity)
					dec, err := NewDecoder(c.info, src)
					if err != nil {
						t.Fatal(err)
					}
					allReported := src.checkReports(t, dec)
					var out bytes.Buffer
					n, err := dec.Copy(t.Context(), &out)
					if err != nil {
						t.Fatal(err)
					}
					if n != int64(size) || !bytes.Equal(out.Bytes(), data) {
						t.Fatalf("read back %d bytes that differ from the %d written", n, size)
					}
					allReported()
				})
			}
		}
	}
}

func sha256Of(b []byte) [32]byte {
	enc, _ := NewEncoder(bytes.NewReader(b), Layout{1, 0}, 1<<20)
	for {
		if _, err := enc.Next(); err != nil {
			break
		}
	}
	info, _ := enc.Info()
	return info.SHA256
}

func TestTooManyLostShards(t *testing.T) {
	for _, l := range testLayouts {
		t.Run(l.String(), func(t *testing.T) {
			rng := rand.New(rand.NewPCG(1, 2))
			data := randomBytes(rng, 5000)
			c := encode(t, data, l, 1000)
			src := &memSource{c: c, damaged: map[[2]int]damage{}}
			for _, i := range rng.Perm(l.Shards())[:l.Parity+1] { // one more than tolerated, in block 2
				src.damaged[[2]int{2, i}] = damage(1 + rng.IntN(damages))
			}
			dec, _ := NewDecoder(c.info, src)
			var out bytes.Buffer
			_, err := dec.Copy(t.Context(), &out)
			var be *BlockError
			if !errors.Is(err, ErrUnrecoverable) || !errors.As(err, &be) {
				t.Fatalf("got %v, want a *BlockError", err)
			}
			if be.Block != 2 || be.Good != l.Data-1 || be.Needed != l.Data || len(be.Bad) != l.Parity+1 {
				t.Fatalf("got %+v", be)
			}
			if !bytes.Equal(out.Bytes(), data[:2000]) {
				t.Fatal("the blocks before the lost one were not written intact")
			}
		})
	}
}

// TestDecoderFetchesOnlyDataShards: an intact file costs exactly k fetches per block.
func TestDecoderFetchesOnlyDataShards(t *testing.T) {
	c := encode(t, randomBytes(rand.New(rand.NewPCG(3, 4)), 10_000), DefaultLayout, 1024)
	src := &memSource{c: c}
	dec, _ := NewDecoder(c.info, src)
	if _, err := dec.Copy(t.Context(), io.Discard); err != nil {
		t.Fatal(err)
	}
	if got, want := src.fetches.Load(), c.info.Blocks()*int64(DefaultLayout.Data); got != want {
		t.Fatalf("%d fetches, want %d", got, want)
	}
}

func TestCopyRange(t *testing.T) {
	const bs = 1000
	rng := rand.New(rand.NewPCG(5, 6))
	data := randomBytes(rng, 7*bs+333)
	for _, l := range []Layout{{1, 1}, {4, 2}, {6, 3}} {
		c := encode(t, data, l, bs)
		src := &memSource{c: c}
		src.damageBlocks(rng, l.Parity)
		dec, _ := NewDecoder(c.info, src)
		size := int64(len(data))
		cases := [][2]int64{{0, 0}, {0, 1}, {0, size}, {size, 0}, {size - 1, 1}, {bs - 1, 2}, {bs, bs}, {123, 4567}, {3*bs + 250, 1}}
		for range 20 {
			off := rng.Int64N(size + 1)
			cases = append(cases, [2]int64{off, rng.Int64N(size - off + 1)})
		}
		for _, tc := range cases {
			t.Run(fmt.Sprintf("%s/off=%d/len=%d", l, tc[0], tc[1]), func(t *testing.T) {
				var out bytes.Buffer
				n, err := dec.CopyRange(t.Context(), &out, tc[0], tc[1])
				if err != nil {
					t.Fatal(err)
				}
				if n != tc[1] || !bytes.Equal(out.Bytes(), data[tc[0]:tc[0]+tc[1]]) {
					t.Fatalf("got %d bytes, want %d, or they differ", n, tc[1])
				}
			})
		}
	}
}

func TestCopyRangeRejectsOutOfRange(t *testing.T) {
	c := encode(t, make([]byte, 100), DefaultLayout, 64)
	dec, _ := NewDecoder(c.info, &memSource{c: c})
	for _, tc := range [][2]int64{{-1, 1}, {0, -1}, {0, 101}, {101, 0}, {50, 51}, {1, 1<<63 - 1}} {
		t.Run(fmt.Sprint(tc), func(t *testing.T) {
			if _, err := dec.CopyRange(t.Context(), io.Discard, tc[0], tc[1]); !errors.Is(err, ErrRange) {
				t.Fatalf("got %v, want ErrRange", err)
			}
		})
	}
}

// TestCopyDetectsWrongFileInfo: if the manifest's SHA-256 is wrong, a whole-file read says so.
func TestCopyDetectsWrongFileInfo(t *testing.T) {
	c := encode(t, []byte("hello, world"), DefaultLayout, 64)
	c.info.SHA256[0] ^= 1
	dec, _ := NewDecoder(c.info, &memSource{c: c})
	if _, err := dec.Copy(t.Context(), io.Discard); !errors.Is(err, ErrFileChecksum) {
		t.Fatalf("got %v, want ErrFileChecksum", err)
	}
}

func TestRebuild(t *testing.T) {
	rng := rand.New(rand.NewPCG(7, 8))
	for _, l := range testLayouts[1:] {
		t.Run(l.String(), func(t *testing.T) {
			c := encode(t, randomBytes(rng, 3500), l, 1000)
			src := &memSource{c: c}
			dec, _ := NewDecoder(c.info, src)
			for b := range c.info.Blocks() {
				lost := rng.Perm(l.Shards())[:1+rng.IntN(l.Parity)]
				got, err := dec.Rebuild(t.Context(), b, lost)
				if err != nil {
					t.Fatal(err)
				}
				for j, i := range lost {
					if !bytes.Equal(got[j], c.shards[b][i]) {
						t.Fatalf("block %d: rebuilt shard %d differs", b, i)
					}
				}
			}
		})
	}
}

func TestRebuildErrors(t *testing.T) {
	c := encode(t, make([]byte, 3000), DefaultLayout, 1000)
	dec, _ := NewDecoder(c.info, &memSource{c: c})
	for name, tc := range map[string]struct {
		block int64
		lost  []int
		want  error
	}{
		"negative block":   {-1, []int{0}, ErrRange},
		"block past end":   {3, []int{0}, ErrRange},
		"too many lost":    {0, []int{0, 1, 2}, ErrUnrecoverable},
		"shard out of set": {0, []int{6}, nil},
		"duplicate shard":  {0, []int{1, 1}, nil},
	} {
		t.Run(name, func(t *testing.T) {
			_, err := dec.Rebuild(t.Context(), tc.block, tc.lost)
			if err == nil || (tc.want != nil && !errors.Is(err, tc.want)) {
				t.Fatalf("got %v, want %v", err, tc.want)
			}
		})
	}
}

// TestOnePlusOneIsTwoCopies: with one data shard, every parity shard is a plain copy, so 1+m is
// replication and a shard can be read by anyone without the coder.
func TestOnePlusOneIsTwoCopies(t *testing.T) {
	c := encode(t, []byte("replicated"), Layout{1, 2}, 64)
	for i, s := range c.shards[0] {
		if string(s) != "replicated" {
			t.Fatalf("shard %d = %q", i, s)
		}
	}
}

func TestEncoderReadsInAnyChunks(t *testing.T) {
	rng := rand.New(rand.NewPCG(9, 10))
	data := randomBytes(rng, 300_000) // more than firstRead, so the buffer grows
	want := encode(t, data, DefaultLayout, 100_003)
	for name, r := range map[string]io.Reader{
		"one byte":  iotest.OneByteReader(bytes.NewReader(data)),
		"half":      iotest.HalfReader(bytes.NewReader(data)),
		"data+EOF":  iotest.DataErrReader(bytes.NewReader(data)),
		"multi":     io.MultiReader(bytes.NewReader(data[:1]), bytes.NewReader(data[1:70_000]), bytes.NewReader(data[70_000:])),
		"plainOnly": struct{ io.Reader }{bytes.NewReader(data)},
	} {
		t.Run(name, func(t *testing.T) {
			enc, _ := NewEncoder(r, DefaultLayout, 100_003)
			for {
				if _, err := enc.Next(); err == io.EOF {
					break
				} else if err != nil {
					t.Fatal(err)
				}
			}
			got, _ := enc.Info()
			if got.SHA256 != want.info.SHA256 || got.Size != want.info.Size || fmt.Sprint(got.Sums) != fmt.Sprint(want.info.Sums) {
				t.Fatal("info differs from the one encoded from a bytes.Reader")
			}
		})
	}
}

// TestSmallFilesStaySmall: a 1 KiB file must not cost a whole default block of buffers (1,000 small pushes
// a second would otherwise allocate gigabytes a second).
func TestSmallFilesStaySmall(t *testing.T) {
	enc, _ := NewEncoder(bytes.NewReader(make([]byte, 1024)), DefaultLayout, DefaultBlockSize)
	for {
		if _, err := enc.Next(); err != nil {
			break
		}
	}
	if n := cap(enc.data) + cap(enc.parity); n > 2*firstRead {
		t.Fatalf("%d bytes of buffers for a 1 KiB file", n)
	}
}

func TestEncoderErrors(t *testing.T) {
	boom := errors.New("boom")
	t.Run("reader error is returned and sticky", func(t *testing.T) {
		enc, _ := NewEncoder(io.MultiReader(bytes.NewReader(make([]byte, 10)), iotest.ErrReader(boom)), DefaultLayout, 64)
		for range 2 {
			if _, err := enc.Next(); !errors.Is(err, boom) {
				t.Fatalf("got %v, want %v", err, boom)
			}
		}
		if _, err := enc.Info(); err == nil {
			t.Fatal("Info succeeded after a failed read")
		}
	})
	t.Run("Info before EOF", func(t *testing.T) {
		enc, _ := NewEncoder(bytes.NewReader(make([]byte, 100)), DefaultLayout, 64)
		if _, err := enc.Info(); err == nil {
			t.Fatal("Info succeeded before the stream was read")
		}
	})
	t.Run("EOF is sticky", func(t *testing.T) {
		enc, _ := NewEncoder(bytes.NewReader(nil), DefaultLayout, 64)
		for range 2 {
			if _, err := enc.Next(); err != io.EOF {
				t.Fatalf("got %v, want io.EOF", err)
			}
		}
	})
	for name, tc := range map[string]struct {
		l  Layout
		bs int
	}{
		"no data shards": {Layout{0, 2}, 64},
		"too many":       {Layout{200, 57}, 64},
		"zero block":     {DefaultLayout, 0},
		"huge block":     {DefaultLayout, MaxBlockSize + 1},
	} {
		t.Run(name, func(t *testing.T) {
			if _, err := NewEncoder(bytes.NewReader(nil), tc.l, tc.bs); err == nil {
				t.Fatal("accepted")
			}
		})
	}
}

func TestDecoderStopsOnCancel(t *testing.T) {
	c := encode(t, make([]byte, 10_000), DefaultLayout, 1000)
	ctx, cancel := context.WithCancel(t.Context())
	var blocks atomic.Int64
	src := ShardSourceFunc(func(ctx context.Context, b int64, i int) ([]byte, error) {
		if blocks.Add(1) > 8 {
			cancel()
		}
		return c.shards[b][i], ctx.Err()
	})
	dec, _ := NewDecoder(c.info, src)
	if _, err := dec.Copy(ctx, io.Discard); !errors.Is(err, context.Canceled) {
		t.Fatalf("got %v, want context.Canceled", err)
	}
}

// TestConcurrentDecoders shares one coder between goroutines; -race checks it.
func TestConcurrentDecoders(t *testing.T) {
	rng := rand.New(rand.NewPCG(11, 12))
	data := randomBytes(rng, 20_000)
	c := encode(t, data, Layout{5, 3}, 1000)
	var wg sync.WaitGroup
	for g := range 4 {
		wg.Go(func() {
			src := &memSource{c: c}
			src.damageBlocks(rand.New(rand.NewPCG(uint64(g), 0)), 3)
			dec, _ := NewDecoder(c.info, src)
			var out bytes.Buffer
			if _, err := dec.Copy(t.Context(), &out); err != nil || !bytes.Equal(out.Bytes(), data) {
				t.Errorf("goroutine %d: %v", g, err)
			}
		})
	}
	wg.Wait()
}

func TestFileInfoValidate(t *testing.T) {
	good := func() *FileInfo {
		return &FileInfo{Layout: DefaultLayout, BlockSize: 10, Size: 25, Sums: [][]Sum{make([]Sum, 6), make([]Sum, 6), make([]Sum, 6)}}
	}
	if err := good().Validate(); err != nil {
		t.Fatal(err)
	}
	for name, mutate := range map[string]func(*FileInfo){
		"bad layout":        func(f *FileInfo) { f.Layout = Layout{0, 1} },
		"zero block size":   func(f *FileInfo) { f.BlockSize = 0 },
		"negative size":     func(f *FileInfo) { f.Size = -1 },
		"huge size":         func(f *FileInfo) { f.Size = 1<<63 - 1 },
		"too few blocks":    func(f *FileInfo) { f.Size = 31 },
		"too many blocks":   func(f *FileInfo) { f.Size = 20 },
		"short block sums":  func(f *FileInfo) { f.Sums[1] = f.Sums[1][:5] },
		"missing sums list": func(f *FileInfo) { f.Sums = nil },
	} {
		t.Run(name, func(t *testing.T) {
			f := good()
			mutate(f)
			if err := f.Validate(); err == nil {
				t.Fatal("accepted")
			}
			if _, err := NewDecoder(f, &memSource{}); err == nil {
				t.Fatal("NewDecoder accepted it")
			}
		})
	}
}

// FuzzRoundTrip: any bytes, in any layout and block size, with up to Parity shards of every block lost
// (chosen by the input), read back identical.
func FuzzRoundTrip(f *testing.F) {
	f.Add([]byte(""), uint8(4), uint8(2), uint16(64), uint64(0))
	f.Add([]byte("x"), uint8(1), uint8(1), uint16(1), uint64(1))
	f.Add(bytes.Repeat([]byte("abc"), 100), uint8(6), uint8(3), uint16(17), uint64(42))
	f.Fuzz(func(t *testing.T, data []byte, k, m uint8, bs uint16, seed uint64) {
		l := Layout{Data: 1 + int(k%10), Parity: int(m % 5)}
		c := encode(t, data, l, 1+int(bs%512))
		src := &memSource{c: c}
		src.damageBlocks(rand.New(rand.NewPCG(seed, 0)), l.Parity)
		dec, err := NewDecoder(c.info, src)
		if err != nil {
			t.Fatal(err)
		}
		var out bytes.Buffer
		if _, err := dec.Copy(t.Context(), &out); err != nil {
			t.Fatal(err)
		}
		if !bytes.Equal(out.Bytes(), data) {
			t.Fatal("round trip changed the data")
		}
	})
}

// Example shows the whole cycle: encode a stream into shards, lose two of them, read it back.
func Example() {
	enc, _ := NewEncoder(bytes.NewReader([]byte("a file, cut into blocks of sixteen bytes")), DefaultLayout, 16)
	stored := map[[2]int64][]byte{} // (block, shard) -> bytes; in real life, on six workers
	for {
		b, err := enc.Next()
		if err != nil {
			break // io.EOF
		}
		for i, s := range b.Shards {
			stored[[2]int64{b.Index, int64(i)}] = bytes.Clone(s)
		}
	}
	info, _ := enc.Info()
	delete(stored, [2]int64{0, 1}) // a worker is gone
	stored[[2]int64{1, 0}][0] ^= 1 // a disk flipped a bit

	dec, _ := NewDecoder(info, ShardSourceFunc(func(_ context.Context, b int64, i int) ([]byte, error) {
		if s, ok := stored[[2]int64{b, int64(i)}]; ok {
			return s, nil
		}
		return nil, errors.New("not found")
	}))
	dec.OnBadShard = func(s BadShard) { fmt.Printf("repair block %d shard %d\n", s.Block, s.Shard) }
	var out bytes.Buffer
	_, err := dec.Copy(context.Background(), &out)
	fmt.Printf("%d blocks in %s: %q %v\n", info.Blocks(), info.Layout, out.String(), err)
	// Output:
	// repair block 0 shard 1
	// repair block 1 shard 0
	// 3 blocks in 4+2: "a file, cut into blocks of sixteen bytes" <nil>
}

// A Coder codes a block in place exactly as the Encoder codes it, from a
// buffer of BufferLen(n) bytes, and refuses one too small.
func TestCoderMatchesEncoder(t *testing.T) {
	const blockSize = 64 << 10
	for _, l := range []Layout{{Data: 4, Parity: 2}, {Data: 2, Parity: 1}, {Data: 1, Parity: 0}} {
		for _, n := range []int{1, 5, blockSize - 3, blockSize} {
			t.Run(fmt.Sprintf("%s/%d", l, n), func(t *testing.T) {
				data := make([]byte, n)
				rand.NewChaCha8([32]byte{byte(n)}).Read(data)
				enc, err := NewEncoder(bytes.NewReader(data), l, blockSize)
				if err != nil {
					t.Fatal(err)
				}
				want, err := enc.Next()
				if err != nil {
					t.Fatal(err)
				}
				c, err := NewCoder(l, blockSize)
				if err != nil {
					t.Fatal(err)
				}
				buf := make([]byte, c.BufferLen(n))
				copy(buf, data)
				if _, _, err := c.Code(buf[:len(buf)-1], n); err == nil && len(buf) > n {
					t.Errorf("coded %d bytes in a buffer of %d, short of %d", n, len(buf)-1, len(buf))
				}
				rand.NewChaCha8([32]byte{9}).Read(buf[n:]) // padding and parity start dirty
				shards, sums, err := c.Code(buf, n)
				if err != nil {
					t.Fatal(err)
				}
				for i := range want.Shards {
					if !bytes.Equal(shards[i], want.Shards[i]) || sums[i] != want.Sums[i] {
						t.Errorf("shard %d differs from the Encoder's", i)
					}
				}
			})
		}
	}
}
