package function

import (
	"context"
	"encoding/json"
	"fmt"
	"reflect"
	"testing"
)

// FuzzScalarPath checks that the scalar fast path binds exactly what the
// general path does, and fails (so that the general path answers) where it
// would fail: for every input, the arguments bound with the fast path on and
// off are equal, and so are the errors.
func FuzzScalarPath(f *testing.F) {
	for _, seed := range []string{
		`[1, "a", true, 2, 3, -4]`, `[1,"a",false,2.5,3,-4]`, `[ 9223372036854775807 , "", true, 1e3, 255, -128 ]`,
		`[1, "a\"b", true, 2, 3, 4]`, `[1, "é", true, 2, 3, 4]`, `[01, "a", true, 2, 3, 4]`, `[-0, "a", true, -0, 0, -0]`,
		`[1, "a", true, 2, 256, 4]`, `[1, "a", true, 2, 3, -129]`, `[1, "a", null, 2, 3, 4]`, `[1, "a", true, 2, 3]`,
		`[1, "a", true, 2, 3, 4, 5]`, `[1, "a", true, 2, 3, 4,]`, `[1 2]`, `["1", "a", true, 2, 3, 4]`, `[1, a, true, 2, 3, 4]`,
		`[1, "a", True, 2, 3, 4]`, `[1, "a", true, 2, 3, 4] x`, `[1, "a\u0041", true, 2, 3, 4]`, `[1.0, "a", true, 2, 3, 4]`,
		`[-, "a", true, 2, 3, 4]`, `[1, "a`, `[`, `[]`, `[1, "a", true, 18446744073709551616, 3, 4]`, "[1, \"a\x01\", true, 2, 3, 4]",
	} {
		f.Add(seed)
	}
	fn, err := Bind("scalars", func(a int, s string, b bool, x float64, u uint8, i int8) string { return "" })
	if err != nil {
		f.Fatal(err)
	}
	if !fn.scalars {
		f.Fatal("a function of scalars does not take the fast path")
	}
	f.Fuzz(func(t *testing.T, input string) {
		fast, fastErr := fn.decode([]byte(input))
		general := *fn
		general.scalars = false
		slow, slowErr := general.decode([]byte(input))
		if (fastErr == nil) != (slowErr == nil) || fastErr != nil && fastErr.Error() != slowErr.Error() {
			t.Fatalf("%q: errors differ: fast path %v, general %v", input, fastErr, slowErr)
		}
		if len(fast) != len(slow) {
			t.Fatalf("%q: %d arguments with the fast path, %d without", input, len(fast), len(slow))
		}
		for i := range fast {
			if !reflect.DeepEqual(fast[i].Interface(), slow[i].Interface()) {
				t.Fatalf("%q: argument %d is %#v with the fast path, %#v without", input, i+1, fast[i].Interface(), slow[i].Interface())
			}
		}
	})
}

// The typed path is taken where it may be: Direct1 and Direct2 of scalars
// with a result appendScalar writes, and no context.
func TestTypedPathTaken(t *testing.T) {
	type celsius int
	for _, c := range []struct {
		name  string
		bind  func() (*Func, error)
		typed bool
	}{
		{"add", func() (*Func, error) { return Direct2("add", func(a, b int) int { return a + b }) }, true},
		{"named", func() (*Func, error) { return Direct1("named", func(c celsius) bool { return c > 0 }) }, true},
		{"string result", func() (*Func, error) { return Direct1("hello", func(s string) string { return s }) }, false},
		{"float result", func() (*Func, error) { return Direct1("half", func(n int) float64 { return float64(n) / 2 }) }, false},
		{"context", func() (*Func, error) {
			return Direct2("ctx", func(ctx context.Context, n int) int { return n })
		}, false},
		{"any", func() (*Func, error) { return Direct1("any", func(v any) int { return 0 }) }, false},
		{"struct", func() (*Func, error) { return Direct1("struct", func(p struct{ X int }) int { return p.X }) }, false},
	} {
		f, err := c.bind()
		if err != nil {
			t.Fatal(err)
		}
		if got := f.typed != nil; got != c.typed {
			t.Errorf("%s: typed path %v, want %v", c.name, got, c.typed)
		}
	}
}

// FuzzTypedPath checks that the typed path answers every input as the
// general path does: the same result, or the same error.
func FuzzTypedPath(f *testing.F) {
	for _, seed := range []string{`[1, "a"]`, `[-128, ""]`, `[128, "a"]`, `[1, "a\"b"]`, `[1, "é"]`, `[1]`, `[1, "a", 2]`,
		`[1.0, "a"]`, `[01, "a"]`, `{"a": 1}`, ``, `null`, `[1, "a"] x`, `[1, "abcdefghij"]`} {
		f.Add(seed)
	}
	fn := func(a int8, s string) uint16 {
		if len(s) > 8 {
			panic("long")
		}
		return uint16(int(a) + len(s))
	}
	typed, err := Direct2("f", fn)
	if err != nil || typed.typed == nil {
		f.Fatalf("Direct2 of scalars: %v, typed path %v", err, typed != nil && typed.typed != nil)
	}
	general, _ := Bind("f", fn)
	ctx := context.Background()
	f.Fuzz(func(t *testing.T, input string) {
		got, gotErr := typed.Call(ctx, []byte(input))
		want, wantErr := general.Call(ctx, []byte(input))
		if string(got) != string(want) || fmt.Sprint(gotErr) != fmt.Sprint(wantErr) || reflect.TypeOf(gotErr) != reflect.TypeOf(wantErr) {
			t.Fatalf("%q: typed %q, %v; general %q, %v", input, got, gotErr, want, wantErr)
		}
	})
}

// level is an integer that encodes itself as a name, as encoding/json
// would call it to.
type level int

func (l level) MarshalJSON() ([]byte, error) { return json.Marshal([]string{"low", "high"}[l]) }

func (l *level) UnmarshalJSON(b []byte) error {
	switch string(b) {
	case `"low"`:
		*l = 0
	case `"high"`:
		*l = 1
	default:
		return fmt.Errorf("no level %s", b)
	}
	return nil
}

// A scalar type with its own JSON encoding is bound and answered by it,
// on every path, never as its kind.
func TestScalarKindsWithTheirOwnJSON(t *testing.T) {
	raise := func(l level) level { return 1 - l }
	bound, _ := Bind("raise", raise)
	direct, _ := Direct1("raise", raise)
	if bound.scalars || direct.typed != nil {
		t.Errorf("a level takes a fast path (scalars %v, typed %v)", bound.scalars, direct.typed != nil)
	}
	ctx := context.Background()
	for _, f := range []*Func{bound, direct} {
		for in, want := range map[string]string{`["low"]`: `"high"`, `["high"]`: `"low"`} {
			if got, err := f.Call(ctx, []byte(in)); err != nil || string(got) != want {
				t.Errorf("raise(%s) = %s, %v; want %s", in, got, err, want)
			}
		}
		if _, err := f.Call(ctx, []byte(`[0]`)); err == nil {
			t.Errorf("raise([0]) bound 0 as a number; encoding/json refuses it")
		}
	}
}
