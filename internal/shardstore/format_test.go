package shardstore

import (
	"bytes"
	"context"
	"errors"
	"hash/crc32"
	"os"
	"path/filepath"
	"testing"
)

func TestHeaderRoundTrip(t *testing.T) {
	for _, k := range []Key{
		{FileID: "f", WriteID: "w"},
		{FileID: "file-1_A", WriteID: "0123456789abcdef", Block: 1<<63 - 1, Shard: MaxShard},
		{FileID: string(bytes.Repeat([]byte("x"), MaxIDLen)), WriteID: string(bytes.Repeat([]byte("y"), MaxIDLen)), Block: 42, Shard: 7},
	} {
		t.Run(k.String()[:min(len(k.String()), 30)], func(t *testing.T) {
			h := encodeHeader(k)
			if len(h) != headerLen(k) || len(h) > maxHeaderLen {
				t.Fatalf("header of %d bytes, want %d (max %d)", len(h), headerLen(k), maxHeaderLen)
			}
			got, n, err := decodeHeader(append(h, "payload follows"...))
			if err != nil || got != k || n != len(h) {
				t.Fatalf("decoded %v, %d, %v", got, n, err)
			}
		})
	}
}

func TestFileNameRoundTrip(t *testing.T) {
	for _, tc := range []struct {
		name string
		ok   bool
	}{
		{"0.0", true}, {"12.255", true}, {"9223372036854775807.3", true},
		{"9223372036854775808.3", false}, {"1.256", false}, {"01.2", false}, {"1.02", false},
		{"-1.2", false}, {"+1.2", false}, {"1.2.3", false}, {"1", false}, {".1", false}, {"1.", false},
		{".tmp-0.1", false}, {"LOCK", false}, {"1.2 ", false},
	} {
		t.Run(tc.name, func(t *testing.T) {
			b, s, ok := parseFileName(tc.name)
			if ok != tc.ok {
				t.Fatalf("ok = %v, want %v", ok, tc.ok)
			}
			if ok {
				if got := (Key{Block: b, Shard: s}).fileName(); got != tc.name {
					t.Fatalf("parsed to %d.%d, which prints as %q", b, s, got)
				}
			}
		})
	}
}

func FuzzDecodeHeader(f *testing.F) {
	f.Add(encodeHeader(Key{FileID: "file", WriteID: "write", Block: 3, Shard: 1}))
	f.Add(encodeHeader(Key{FileID: "a", WriteID: "b"}))
	f.Add([]byte(headerMagic))
	f.Add([]byte{})
	f.Fuzz(func(t *testing.T, b []byte) {
		k, n, err := decodeHeader(b)
		if err != nil {
			if !errors.Is(err, errFormat) {
				t.Fatalf("error %v does not wrap errFormat", err)
			}
			return
		}
		if err := k.Validate(); err != nil {
			t.Fatalf("accepted a header naming an invalid key: %v", err)
		}
		if !bytes.Equal(encodeHeader(k), b[:n]) {
			t.Fatal("accepted a header that is not the encoding of the key it names")
		}
	})
}

func FuzzDecodeFooter(f *testing.F) {
	f.Add(encodeFooter(0, 0))
	f.Add(encodeFooter(1<<20, 0xdeadbeef))
	f.Add(make([]byte, footerLen))
	f.Fuzz(func(t *testing.T, b []byte) {
		n, crc, err := decodeFooter(b)
		if err != nil {
			return
		}
		if n < 0 || !bytes.Equal(encodeFooter(n, crc), b) {
			t.Fatalf("accepted footer %x as (%d, %08x)", b, n, crc)
		}
	})
}

func FuzzParseFileName(f *testing.F) {
	for _, s := range []string{"0.0", "12.255", "01.2", "1.256", ".tmp-x", "9223372036854775807.1"} {
		f.Add(s)
	}
	f.Fuzz(func(t *testing.T, name string) {
		b, s, ok := parseFileName(name)
		if !ok {
			return
		}
		k := Key{FileID: "f", WriteID: "w", Block: b, Shard: s}
		if k.Validate() != nil || k.fileName() != name {
			t.Fatalf("%q parsed to block %d shard %d", name, b, s)
		}
	})
}

// FuzzShardFile feeds arbitrary bytes to the reader as the content of a shard file: it must never panic,
// and must accept only the exact file Put would have written for that key.
func FuzzShardFile(f *testing.F) {
	k := Key{FileID: "fuzz", WriteID: "w", Block: 1, Shard: 2}
	valid := func(p []byte) []byte {
		var b bytes.Buffer
		b.Write(encodeHeader(k))
		b.Write(p)
		b.Write(encodeFooter(int64(len(p)), crc32.Checksum(p, castagnoli)))
		return b.Bytes()
	}
	f.Add(valid(nil))
	f.Add(valid([]byte("hello")))
	f.Add(valid(bytes.Repeat([]byte{0xff}, 300))[:200])
	f.Add([]byte("garbage"))
	dir := f.TempDir()
	f.Fuzz(func(t *testing.T, content []byte) {
		path := filepath.Join(dir, "shard")
		if err := os.WriteFile(path, content, 0o644); err != nil {
			t.Fatal(err)
		}
		fh, err := os.Open(path)
		if err != nil {
			t.Fatal(err)
		}
		defer fh.Close()
		info, out, err := readShard(context.Background(), fh, path, k, readPayload, nil)
		if err != nil {
			var ce *CorruptError
			if !errors.As(err, &ce) || ce.Key != k {
				t.Fatalf("error %v is not a *CorruptError for %s", err, k)
			}
			return
		}
		if !bytes.Equal(valid(out), content) || info.Size != int64(len(out)) {
			t.Fatal("accepted a file that is not what Put writes")
		}
	})
}
