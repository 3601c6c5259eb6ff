package starlarkrun

import (
	"errors"
	"fmt"
	"strings"
	"testing"
)

func TestCheck(t *testing.T) {
	for _, tc := range []struct {
		name, src, fn string
		line          int    // of the *ScriptError; 0 for none
		msg           string // in the error; "" for no error
	}{
		{"a function", addScript, "add", 0, ""},
		{"a lambda", "add = lambda a, b: a + b\n", "add", 0, ""},
		{"host builtins and modules", "def f(x):\n    log(json.encode(x), math.pi)\n", "f", 0, ""},
		{"recursion compiles (and fails when run)", "def f(n):\n    return f(n)\n", "f", 0, ""},
		{"syntax error", "def add(a, b)\n    return a + b\n", "add", 2, "add.star:2:1: got newline, want ':'"},
		{"undefined name", "def add(a, b):\n    return a + c\n", "add", 2, "add.star:2:16: undefined: c"},
		{"several undefined names", "def f():\n    return a + b + c\n", "f", 2, "undefined: a (and 2 more errors)"},
		{"file access", "def f():\n    return open(\"x\")\n", "f", 2, "no file, socket or environment access of their own"},
		{"load", "load(\"lib.star\", \"x\")\n", "x", 1, "load() is not supported"},
		{"Python's power operator", "x = 10**9\n", "x", 1, "got '**'"},
		{"missing function", "def sub(a, b):\n    return a - b\n\ndef mul(a, b):\n    return a * b\n", "add", 0,
			`add.star has no top-level function "add"; it defines mul, sub`},
		{"empty script", "", "add", 0, "defines no top-level function; add \"def add(...):\""},
		{"nested function is not top level", "def outer():\n    def add(a, b):\n        return a + b\n    return add\n", "add", 0, `no top-level function "add"`},
	} {
		t.Run(tc.name, func(t *testing.T) {
			err := Check("add.star", []byte(tc.src), tc.fn)
			if tc.msg == "" {
				if err != nil {
					t.Fatalf("Check: %v", err)
				}
				return
			}
			if !errors.Is(err, ErrInvalidScript) || !strings.Contains(err.Error(), tc.msg) {
				t.Fatalf("got %v, want ErrInvalidScript containing %q", err, tc.msg)
			}
			var se *ScriptError
			if tc.line != 0 && (!errors.As(err, &se) || se.Line != tc.line) {
				t.Errorf("want a *ScriptError at line %d, got %+v", tc.line, se)
			}
		})
	}
}

func ExampleCheck() {
	err := Check("add.star", []byte("def add(a, b):\n    return a + c\n"), "add")
	fmt.Println(err)
	var se *ScriptError
	if errors.As(err, &se) {
		fmt.Println("line", se.Line)
	}
	// Output:
	// invalid Starlark script: add.star:2:16: undefined: c; scripts have Starlark's built-ins, json, math, log, secret and http (through the pool), and no file, socket or environment access of their own
	// line 2
}

// FuzzCheck checks that no script makes Check panic or accept a script
// without the function.
func FuzzCheck(f *testing.F) {
	for _, s := range []string{addScript, "def add(a, b)\n", "load(\"x\", \"y\")\n", "add = 1\n", "x = [[[[1]]]]\ndef add():\n    return x\n"} {
		f.Add(s)
	}
	f.Fuzz(func(t *testing.T, src string) {
		err := Check("fuzz.star", []byte(src), "add")
		if err != nil && !errors.Is(err, ErrInvalidScript) {
			t.Fatalf("error %v is not ErrInvalidScript", err)
		}
		if err == nil && !strings.Contains(src, "add") {
			t.Fatalf("accepted %q, which has no add", src)
		}
	})
}
