package starlarkrun

import (
	"bufio"
	"bytes"
	"encoding/json"
	"errors"
	"math"
	"strings"
	"testing"

	"go.starlark.net/starlark"

	"github.com/hivemind/taskworker/internal/childproc"
)

func TestEncodeJSON(t *testing.T) {
	set := starlark.NewSet(1)
	set.Insert(starlark.MakeInt(1))
	dict := starlark.NewDict(2)
	dict.SetKey(starlark.String("b"), starlark.Tuple{starlark.None, starlark.Float(1e21)})
	dict.SetKey(starlark.String("a"), starlark.String("\x00<\xff>"))
	for _, tc := range []struct {
		name string
		v    starlark.Value
		max  int
		want string // or the error's text
	}{
		{"dict in insertion order", dict, 100, `{"b":[null,1e+21],"a":"\u0000<\ufffd>"}`},
		{"big int", starlark.MakeInt64(1 << 62).Mul(starlark.MakeInt(8)), 100, "36893488147419103232"},
		{"small float", starlark.Float(0.1), 100, "0.1"},
		{"set", starlark.NewList([]starlark.Value{set}), 100, "result[0]: a set has no JSON form"},
		{"bytes", starlark.Bytes("x"), 100, "result: a bytes has no JSON form"},
		{"infinity", starlark.Float(math.Inf(1)), 100, "+inf has no JSON form"},
		{"over the limit", starlark.String(strings.Repeat("x", 11)), 10, errResultTooLarge.Error()},
		{"at the limit", starlark.String(strings.Repeat("x", 8)), 10, `"xxxxxxxx"`},
	} {
		t.Run(tc.name, func(t *testing.T) {
			out, err := encodeJSON(tc.v, tc.max)
			got := string(out)
			if err != nil {
				got = err.Error()
			}
			if got != tc.want && (err == nil || !strings.Contains(got, tc.want)) {
				t.Errorf("got %s, want %s", got, tc.want)
			}
		})
	}
}

func TestDecodeArgs(t *testing.T) {
	for _, tc := range []struct {
		in, args, kwargs, err string
	}{
		{in: "", args: "()", kwargs: "[]"},
		{in: " null ", args: "()", kwargs: "[]"},
		{in: `[1, "a", [true], {"k": null}]`, args: `(1, "a", [True], {"k": None})`, kwargs: "[]"},
		{in: `{"b": 2, "a": 1.5}`, args: "()", kwargs: `[("b", 2), ("a", 1.5)]`},
		{in: `[1e400]`, err: "out of range"},
		{in: `[1] [2]`, err: "more data after the value"},
		{in: `[1,`, err: "invalid JSON"},
		{in: `7`, err: "must be a JSON array"},
	} {
		args, kwargs, err := decodeArgs([]byte(tc.in))
		if tc.err != "" {
			if err == nil || !strings.Contains(err.Error(), tc.err) {
				t.Errorf("decodeArgs(%s): got %v, want error %q", tc.in, err, tc.err)
			}
			continue
		}
		if err != nil || args.String() != tc.args || starlark.NewList(tuples(kwargs)).String() != tc.kwargs {
			t.Errorf("decodeArgs(%s) = %s, %v, %v", tc.in, args, kwargs, err)
		}
	}
}

func tuples(ts []starlark.Tuple) []starlark.Value {
	vs := make([]starlark.Value, len(ts))
	for i, t := range ts {
		vs[i] = t
	}
	return vs
}

// FuzzJSON checks that any JSON a caller sends decodes without panicking
// and that what comes back out is valid JSON that decodes to the same.
func FuzzJSON(f *testing.F) {
	for _, s := range []string{`[1, 2]`, `{"a": [1.5, "x", null, true]}`, `[123456789012345678901234567890]`, `["\ud800"]`, `[-0.0, 1e-7]`} {
		f.Add([]byte(s))
	}
	f.Fuzz(func(t *testing.T, data []byte) {
		args, kwargs, err := decodeArgs(data)
		if err != nil {
			return
		}
		if len(bytes.TrimSpace(data)) > 0 && !json.Valid(data) {
			t.Fatalf("decoded invalid JSON %q", data)
		}
		var v starlark.Value = starlark.NewList(args)
		if kwargs != nil {
			d := starlark.NewDict(len(kwargs))
			for _, kv := range kwargs {
				d.SetKey(kv[0], kv[1])
			}
			v = d
		}
		out, err := encodeJSON(v, 1<<20)
		if err != nil {
			if errors.Is(err, errResultTooLarge) {
				return
			}
			t.Fatalf("encode %v: %v", v, err)
		}
		if !json.Valid(out) {
			t.Fatalf("encoded invalid JSON %q", out)
		}
		again, err := newDecoder(out).decode()
		if err != nil {
			t.Fatalf("decode %q: %v", out, err)
		}
		if eq, err := starlark.EqualDepth(v, again, 100); err == nil && !eq {
			t.Fatalf("round trip changed %v to %v", v, again)
		}
	})
}

// FuzzReadFrame checks the parent's frame reader against anything a child
// could write.
func FuzzReadFrame(f *testing.F) {
	var buf bytes.Buffer
	w := bufio.NewWriter(&buf)
	childproc.WriteFrame(w, frameResult, []byte("42"))
	f.Add(buf.Bytes())
	f.Add([]byte{frameResult, 0xff, 0xff, 0xff, 0xff})
	f.Fuzz(func(t *testing.T, data []byte) {
		r := bufio.NewReader(bytes.NewReader(data))
		for {
			_, payload, err := childproc.ReadFrame(r, func(byte) int { return 1024 })
			if err != nil {
				return
			}
			if len(payload) > 1024 {
				t.Fatalf("payload of %d bytes over the limit", len(payload))
			}
		}
	})
}
