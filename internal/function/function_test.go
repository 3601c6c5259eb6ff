package function_test

import (
	"context"
	"errors"
	"strings"
	"testing"

	"github.com/hivemind/taskworker/internal/function"
)

type point struct {
	X, Y int
}

func TestCall(t *testing.T) {
	tests := []struct {
		name    string
		fn      any
		args    string
		want    string
		wantErr string // substring of an *ArgumentError
	}{
		{"add", func(a, b int) int { return a + b }, `[1, 2]`, `3`, ""},
		{"no args", func() string { return "Hello from HiveMind!" }, ``, `"Hello from HiveMind!"`, ""},
		{"null args", func() string { return "hi" }, `null`, `"hi"`, ""},
		{"context", func(ctx context.Context, s string) string { return s }, `["x"]`, `"x"`, ""},
		{"error nil", func(a int) (int, error) { return a, nil }, `[4]`, `4`, ""},
		{"no result", func(a int) {}, `[4]`, `null`, ""},
		{"struct as object", func(p point) int { return p.X * p.Y }, `{"X": 3, "Y": 4}`, `12`, ""},
		{"struct pointer as object", func(p *point) int { return p.X + p.Y }, `{"X": 3, "Y": 4}`, `7`, ""},
		{"struct in array", func(p point) int { return p.X }, `[{"X": 5}]`, `5`, ""},
		{"map result", func(d any) map[string]any { return map[string]any{"processed": true, "result": d} },
			`[[1,"a"]]`, `{"processed":true,"result":[1,"a"]}`, ""},
		{"wrong arity", func(a, b int) int { return 0 }, `[1]`, "", "takes 2 arguments (int, int), got 1"},
		{"too many", func() int { return 0 }, `[1]`, "", "takes no arguments, got 1"},
		{"wrong type", func(a, b int) int { return 0 }, `[1, "two"]`, "", `argument 2 (int): cannot use JSON string`},
		{"malformed", func(a int) int { return 0 }, `[1,`, "", "arguments must be a JSON array"},
		{"object for non-struct", func(a int) int { return 0 }, `{"a": 1}`, "", "got a JSON object"},
		{"fraction into int", func(a int) int { return a }, `[1.5]`, "", "argument 1 (int)"},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			f, err := function.Bind(tt.name, tt.fn)
			if err != nil {
				t.Fatal(err)
			}
			got, err := f.Call(context.Background(), []byte(tt.args))
			if tt.wantErr != "" {
				var ae *function.ArgumentError
				if !errors.As(err, &ae) || !strings.Contains(err.Error(), tt.wantErr) {
					t.Fatalf("err = %v, want an ArgumentError containing %q", err, tt.wantErr)
				}
				return
			}
			if err != nil {
				t.Fatal(err)
			}
			if string(got) != tt.want {
				t.Errorf("got %s, want %s", got, tt.want)
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
