package guest

import (
	"context"
	"strings"
	"testing"

	"github.com/hivemind/taskworker/internal/function/bindingtest"
)

func init() {
	Function("test.add", func(a, b int) int { return a + b })
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
	input := []byte("[1, 2]")
	for b.Loop() {
		if _, err := invoke("test.add", input); err != nil {
			b.Fatal(err)
		}
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
