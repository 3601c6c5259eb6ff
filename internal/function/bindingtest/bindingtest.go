// Package bindingtest is the one table of how a function's JSON arguments
// and result are bound (docs/ABI.md, "Arguments and results"), which every
// binder is tested against: the native worker's (package function) and the
// guest SDK's (package guest) run it in their tests, and the Python
// worker's runs it through a real pool (python/tests/test_binding.py, with
// the Python implementations in python/tests/bindingfuncs.py), so they
// cannot drift.
//
// The table is testdata/binding.json, plain JSON so that a worker in
// another language can run it too: "functions" describes each function
// (its Go signature and what it does), "cases" gives the arguments as sent
// and either the exact result bytes or the error's kind and a part of its
// message. Functions holds the Go implementation of each.
//
// # Caveats
//
// The messages are the Go binder's wording, kept to the words every binder
// shares: a case's message names a type only where the binders name it
// alike (the Python binder says "int", "string", "uint8" as Go does, but
// "float" and "bytes" where Go says "float64" and "[]uint8").
//
// A Python function has no panic apart from its exceptions, so the panic
// kind reaches a caller of a Python worker as a function error (Unknown),
// as a guest's panic does.
package bindingtest

import (
	"context"
	_ "embed"
	"encoding/json"
	"errors"
	"fmt"

	"github.com/hivemind/taskworker/internal/function"
)

//go:embed testdata/binding.json
var tableJSON []byte

// Error kinds a case may expect.
const (
	// InvalidArgument: the arguments do not fit (gRPC InvalidArgument).
	InvalidArgument = "invalid_argument"
	// FunctionError: the function returned an error (gRPC Unknown).
	FunctionError = "function_error"
	// Panic: the function panicked.
	Panic = "panic"
)

// Case is one call and what it must give.
type Case struct {
	Function string `json:"function"`
	Args     string `json:"args"`
	Result   string `json:"result,omitempty"`
	Error    string `json:"error,omitempty"`   // one of the kinds above
	Message  string `json:"message,omitempty"` // part of the error's message
}

// Name names the case in a subtest.
func (c Case) Name() string { return fmt.Sprintf("%s %s", c.Function, c.Args) }

// Table is testdata/binding.json.
type Table struct {
	Functions map[string]string `json:"functions"`
	Cases     []Case            `json:"cases"`
}

// Load reads the table and checks that every function it names has an
// implementation in Functions and the other way round.
func Load() (*Table, error) {
	var t Table
	if err := json.Unmarshal(tableJSON, &t); err != nil {
		return nil, fmt.Errorf("testdata/binding.json: %w", err)
	}
	for name := range Functions {
		if _, ok := t.Functions[name]; !ok {
			return nil, fmt.Errorf("testdata/binding.json does not describe %s", name)
		}
	}
	for name := range t.Functions {
		if _, ok := Functions[name]; !ok {
			return nil, fmt.Errorf("no implementation of %s in bindingtest.Functions", name)
		}
	}
	for _, c := range t.Cases {
		if _, ok := Functions[c.Function]; !ok {
			return nil, fmt.Errorf("case %s: no function %s", c.Name(), c.Function)
		}
	}
	return &t, nil
}

type point struct {
	X, Y int
}

// Functions are the table's functions, by name.
var Functions = map[string]any{
	"add":        func(a, b int) int { return a + b },
	"hello":      func(name string) string { return "Hello, " + name + "!" },
	"none":       func() {},
	"sink":       func(a int) {},
	"count":      func(ctx context.Context, s []string) (int, error) { return len(s), ctx.Err() },
	"fail":       func() error { return errors.New("it failed") },
	"area":       func(p point) int { return p.X * p.Y },
	"swap":       func(p *point) point { return point{p.Y, p.X} },
	"echo_raw":   func(b function.Raw) function.Raw { return b },
	"echo_bytes": func(b []byte) []byte { return b },
	"divide": func(a, b float64) (float64, error) {
		if b == 0 {
			return 0, errors.New("division by zero")
		}
		return a / b, nil
	},
	"explode": func() int { panic("boom") },
	"wrap":    func(d any) map[string]any { return map[string]any{"processed": true, "result": d} },
	"mixed":   func(a int, s string, b bool, u uint8) string { return fmt.Sprintf("%d %s %t %d", a, s, b, u) },
	"nothing": func() (*point, error) { return nil, nil },
}
