package function_test

import (
	"context"
	"errors"
	"strings"
	"testing"

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

func BenchmarkCallAdd(b *testing.B) {
	f, _ := function.Bind("add", func(a, b int) int { return a + b })
	args := []byte("[1, 2]")
	ctx := context.Background()
	b.ReportAllocs()
	for b.Loop() {
		if _, err := f.Call(ctx, args); err != nil {
			b.Fatal(err)
		}
	}
}
