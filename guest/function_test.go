package guest

import (
	"context"
	"errors"
	"strings"
	"testing"
)

type point struct {
	X, Y int
}

func init() {
	Function("test.add", func(a, b int) int { return a + b })
	Function("test.hello", func(name string) string { return "Hello, " + name })
	Function("test.bytes", func(b []byte) []byte { return append(b, '!') })
	Function("test.none", func() {})
	Function("test.ctx", func(ctx context.Context, s []string) (int, error) {
		if ctx == nil {
			return 0, errors.New("no context")
		}
		return len(s), nil
	})
	Function("test.fail", func() error { return errors.New("it failed") })
	Function("test.point", func(p point) int { return p.X * p.Y })
	Function("test.ptr", func(p *point) point { return point{p.Y, p.X} })
	Function("test.panic", func() int { panic("boom") })
}

func TestInvoke(t *testing.T) {
	tests := []struct {
		name, input string
		want        string
		wantErr     string
	}{
		{"test.add", "[1, 2]", "3", ""},
		{"test.add", " [1,2] \n", "3", ""},
		{"test.add", "[1]", "", "invalid argument: this function takes 2 arguments, got 1"},
		{"test.add", `[1, "x"]`, "", "invalid argument: argument 2 (int): json: cannot unmarshal string"},
		{"test.add", "", "", "invalid argument: want the 2 arguments as a JSON array"},
		{"test.add", `{"a": 1}`, "", "invalid argument: want the 2 arguments as a JSON array"},
		{"test.hello", "World", "Hello, World", ""},
		{"test.hello", `["World"]`, `Hello, ["World"]`, ""},
		{"test.bytes", "\x00\xff", "\x00\xff!", ""},
		{"test.none", "", "", ""},
		{"test.none", "[]", "", ""},
		{"test.none", "null", "", ""},
		{"test.none", "[1]", "", "invalid argument: this function takes no arguments"},
		{"test.ctx", `[["a", "b", "c"]]`, "3", ""},
		{"test.fail", "", "", "it failed"},
		{"test.point", `[{"X": 3, "Y": 4}]`, "12", ""},
		{"test.point", `{"X": 3, "Y": 5}`, "15", ""},
		{"test.ptr", `{"X": 1, "Y": 2}`, `{"X":2,"Y":1}`, ""},
		{"test.panic", "", "", "panic in test.panic: boom"},
		{"test.missing", "", "", `no function "test.missing" is registered`},
	}
	for _, tt := range tests {
		t.Run(tt.name+" "+tt.input, func(t *testing.T) {
			out, err := invoke(tt.name, []byte(tt.input))
			if tt.wantErr != "" {
				if err == nil || !strings.Contains(err.Error(), tt.wantErr) {
					t.Fatalf("got %q, %v; want an error containing %q", out, err, tt.wantErr)
				}
				return
			}
			if err != nil || string(out) != tt.want {
				t.Fatalf("got %q, %v; want %q", out, err, tt.want)
			}
		})
	}
}

func TestFunctionRejects(t *testing.T) {
	tests := []struct {
		name string
		fn   any
		want string
	}{
		{"", func() {}, "the name is empty"},
		{"x", 42, "want a func, got int"},
		{"x", func(...int) {}, "variadic"},
		{"x", func(int, context.Context) {}, "context.Context must be the first parameter"},
		{"x", func(chan int) {}, "which JSON cannot carry"},
		{"x", func() (int, int) { return 0, 0 }, "the second result must be error"},
		{"x", func() (int, int, error) { return 0, 0, nil }, "at most one result and an error"},
		{"test.add", func() {}, `"test.add" is already registered`},
	}
	for _, tt := range tests {
		t.Run(tt.want, func(t *testing.T) {
			defer func() {
				r := recover()
				if msg, _ := r.(string); !strings.Contains(msg, tt.want) {
					t.Fatalf("panic %v; want one containing %q", r, tt.want)
				}
			}()
			Function(tt.name, tt.fn)
		})
	}
}
