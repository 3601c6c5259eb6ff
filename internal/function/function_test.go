package function_test

import (
	"context"
	"errors"
	"fmt"
	"reflect"
	"strings"
	"testing"
	"time"

	"github.com/hivemind/taskworker/internal/function"
	"github.com/hivemind/taskworker/internal/function/bindingtest"
)

// TestBindingTable runs the binding table that the guest SDK's tests run
// too (internal/function/bindingtest).
func TestBindingTable(t *testing.T) {
	table, err := bindingtest.Load()
	if err != nil {
		t.Fatal(err)
	}
	for _, c := range table.Cases {
		t.Run(c.Name(), func(t *testing.T) {
			f, err := function.Bind(c.Function, bindingtest.Functions[c.Function])
			if err != nil {
				t.Fatal(err)
			}
			got, err := f.Call(context.Background(), []byte(c.Args))
			var argErr *function.ArgumentError
			var panicErr *function.PanicError
			kind := ""
			switch {
			case errors.As(err, &argErr):
				kind = bindingtest.InvalidArgument
			case errors.As(err, &panicErr):
				kind = bindingtest.Panic
			case err != nil:
				kind = bindingtest.FunctionError
			}
			if kind != c.Error || err != nil && !strings.Contains(err.Error(), c.Message) {
				t.Fatalf("error %v (kind %q); want kind %q containing %q", err, kind, c.Error, c.Message)
			}
			if err == nil && string(got) != c.Result {
				t.Fatalf("result %q, want %q", got, c.Result)
			}
		})
	}
}

func TestFunctionErrorAndPanic(t *testing.T) {
	boom := errors.New("boom")
	f, _ := function.Bind("fails", func() error { return boom })
	if _, err := f.Call(context.Background(), nil); !errors.Is(err, boom) {
		t.Errorf("err = %v, want boom", err)
	}
	f, _ = function.Bind("panics", func() int { panic("oops") })
	_, err := f.Call(context.Background(), nil)
	var pe *function.PanicError
	if !errors.As(err, &pe) || pe.Value != "oops" {
		t.Errorf("err = %v, want a PanicError", err)
	}
}

func TestBindRejects(t *testing.T) {
	tests := []struct {
		name string
		fn   any
		want string
	}{
		{"nil", nil, "nil func"},
		{"not a func", 42, "want a func"},
		{"variadic", func(a ...int) {}, "variadic"},
		{"ctx not first", func(a int, ctx context.Context) {}, "must be the first"},
		{"three results", func() (int, int, error) { return 0, 0, nil }, "at most a value and an error"},
		{"second not error", func() (int, int) { return 0, 0 }, "must be error"},
		{"chan param", func(c chan int) {}, "cannot be carried in JSON"},
		{"non-empty interface param", func(e error) {}, "use any"},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			_, err := function.Bind(tt.name, tt.fn)
			if err == nil || !strings.Contains(err.Error(), tt.want) {
				t.Errorf("err = %v, want it to contain %q", err, tt.want)
			}
		})
	}
}

func TestSignature(t *testing.T) {
	f, _ := function.Bind("add", func(ctx context.Context, a, b int) (int, error) { return 0, nil })
	if got, want := f.Signature(), "func(int, int) (int, error)"; got != want {
		t.Errorf("Signature() = %q, want %q", got, want)
	}
}

// BenchmarkCallAdd is a call of add bound by Bind (reflection) and by
// Direct2.
func BenchmarkCallAdd(b *testing.B) {
	add := func(a, b int) int { return a + b }
	bound, _ := function.Bind("add", add)
	direct, _ := function.Direct2("add", add)
	for _, c := range []struct {
		name string
		f    *function.Func
	}{{"bind", bound}, {"direct", direct}} {
		b.Run(c.name, func(b *testing.B) {
			args := []byte("[1, 2]")
			ctx := context.Background()
			b.ReportAllocs()
			for b.Loop() {
				if _, err := c.f.Call(ctx, args); err != nil {
					b.Fatal(err)
				}
			}
		})
	}
}

// TestDirectBindsAsBind: a Func made by Direct1 or Direct2 answers every
// input as the same func bound by Bind does: the same result, or the same
// error.
func TestDirectBindsAsBind(t *testing.T) {
	type point struct{ X, Y int }
	add := func(a, b int) int { return a + b }
	hello := func(name string) string { return "Hello, " + name + "!" }
	swap := func(p point) point { return point{p.Y, p.X} }
	anyOf := func(s string) any {
		if s == "" {
			return nil
		}
		return s
	}
	half := func(n int) int {
		if n%2 != 0 {
			panic("odd")
		}
		return n / 2
	}
	deadline := func(ctx context.Context, n int) bool { _, ok := ctx.Deadline(); return ok && n > 0 }
	raw := func(r function.Raw) function.Raw { return append(r, '!') }
	type celsius int16
	warm := func(c celsius, f float32) bool { return c > 20 || f > 68 }
	narrow := func(a int8, b uint16) uint32 { return uint32(a) + uint32(b) }
	count := func(s string) int { return len(s) }
	cases := []struct {
		name   string
		bind   any
		direct func() (*function.Func, error)
		inputs []string
	}{
		{"add", add, func() (*function.Func, error) { return function.Direct2("add", add) },
			[]string{"[1, 2]", " [ -4 ,9 ] ", "[1]", "[1, 2, 3]", "[1.5, 2]", "[\"1\", 2]", "{}", "", "[9223372036854775807, 1]"}},
		{"hello", hello, func() (*function.Func, error) { return function.Direct1("hello", hello) },
			[]string{`["World"]`, `["\u00e9"]`, `[1]`, `[]`, `null`}},
		{"swap", swap, func() (*function.Func, error) { return function.Direct1("swap", swap) },
			[]string{`[{"X": 1, "Y": 2}]`, `{"X": 3}`, `[{"X": "a"}]`}},
		{"anyOf", anyOf, func() (*function.Func, error) { return function.Direct1("anyOf", anyOf) },
			[]string{`["x"]`, `[""]`}},
		{"half", half, func() (*function.Func, error) { return function.Direct1("half", half) },
			[]string{"[4]", "[3]"}},
		{"deadline", deadline, func() (*function.Func, error) { return function.Direct2("deadline", deadline) },
			[]string{"[1]", "[0]", "[1, 2]"}},
		{"raw", raw, func() (*function.Func, error) { return function.Direct1("raw", raw) },
			[]string{"anything", ""}},
		{"warm", warm, func() (*function.Func, error) { return function.Direct2("warm", warm) },
			[]string{"[21, 0]", "[20, 69]", "[20, 68.5]", "[32768, 0]", "[-32768, -1]", "[1, 1e3]", "[true, 1]", "[1, null]"}},
		{"narrow", narrow, func() (*function.Func, error) { return function.Direct2("narrow", narrow) },
			[]string{"[-1, 65535]", "[128, 0]", "[1, -1]", "[1, 65536]", "[01, 2]", "[-0, 0]", "[1,2]\f", "[1, 2]\n"}},
		{"count", count, func() (*function.Func, error) { return function.Direct1("count", count) },
			[]string{`["abc"]`, `["a\"b"]`, `["\u00e9"]`, `["é"]`, `[""]`, `[1]`, `["a", "b"]`}},
	}
	ctx, cancel := context.WithTimeout(context.Background(), time.Minute)
	defer cancel()
	for _, c := range cases {
		bound, err := function.Bind(c.name, c.bind)
		if err != nil {
			t.Fatal(err)
		}
		direct, err := c.direct()
		if err != nil {
			t.Fatal(err)
		}
		if bound.Signature() != direct.Signature() {
			t.Errorf("%s: signature %q, Bind's %q", c.name, direct.Signature(), bound.Signature())
		}
		for _, in := range c.inputs {
			want, wantErr := bound.Call(ctx, []byte(in))
			got, err := direct.Call(ctx, []byte(in))
			if string(got) != string(want) || fmt.Sprint(err) != fmt.Sprint(wantErr) || reflect.TypeOf(err) != reflect.TypeOf(wantErr) {
				t.Errorf("%s(%s) = %q, %v; Bind's %q, %v", c.name, in, got, err, want, wantErr)
			}
		}
	}
}
