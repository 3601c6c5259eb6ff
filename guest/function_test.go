package guest

import (
	"context"
	"strings"
	"testing"

	"github.com/hivemind/taskworker/internal/function/bindingtest"
)

func init() {
	Function("test.add", func(a, b int) int { return a + b })
	Function2("test.add2", func(a, b int) int { return a + b })
	Function1("test.hello", func(name string) string { return "Hello, " + name + "!" })
}

// TestDirectFunctions: functions registered with Function1 and Function2
// answer as Function's do.
func TestDirectFunctions(t *testing.T) {
	for _, c := range []struct{ function, args, result, err string }{
		{"test.add2", "[1, 2]", "3", ""},
		{"test.add2", "[1]", "", invalidArgumentPrefix + "test.add2: takes 2 arguments (int, int), got 1"},
		{"test.hello", `["World"]`, `"Hello, World!"`, ""},
		{"test.hello", `[1]`, "", invalidArgumentPrefix},
	} {
		got, err := invoke(c.function, []byte(c.args))
		if string(got) != c.result || c.err == "" && err != nil || c.err != "" && (err == nil || !strings.HasPrefix(err.Error(), c.err)) {
			t.Errorf("%s(%s) = %q, %v; want %q, error %q", c.function, c.args, got, err, c.result, c.err)
		}
	}
}

// TestBindingTable runs the binding table that the native binder's tests
// run too (internal/function/bindingtest), through the guest's registry and
// its error messages.
func TestBindingTable(t *testing.T) {
	table, err := bindingtest.Load()
	if err != nil {
		t.Fatal(err)
	}
	for name, fn := range bindingtest.Functions {
		Function("table."+name, fn)
	}
	for _, c := range table.Cases {
		t.Run(c.Name(), func(t *testing.T) {
			got, err := invoke("table."+c.Function, []byte(c.Args))
			kind := ""
			switch {
			case err == nil:
			case strings.HasPrefix(err.Error(), invalidArgumentPrefix):
				kind = bindingtest.InvalidArgument
			case strings.Contains(err.Error(), "panicked"):
				kind = bindingtest.Panic
			default:
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
	if _, err := invoke("test.missing", nil); err == nil || !strings.Contains(err.Error(), `no function "test.missing" is registered`) {
		t.Errorf("calling an unregistered function: %v", err)
	}
}

func BenchmarkInvokeAdd(b *testing.B) {
	for _, name := range []string{"test.add", "test.add2"} {
		b.Run(name, func(b *testing.B) {
			input := []byte("[1, 2]")
			for b.Loop() {
				if _, err := invoke(name, input); err != nil {
					b.Fatal(err)
				}
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
		{"", func() {}, "function name \"\""},
		{"reports/daily", func() {}, "function name \"reports/daily\""},
		{"x", 42, "want a func"},
		{"x", func(...int) {}, "variadic"},
		{"x", func(int, context.Context) {}, "context.Context must be the first parameter"},
		{"x", func(chan int) {}, "cannot be carried in JSON"},
		{"x", func() (int, int) { return 0, 0 }, "the second result must be error"},
		{"x", func() (int, int, error) { return 0, 0, nil }, "at most a value and an error"},
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
