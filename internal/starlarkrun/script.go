package starlarkrun

import (
	"errors"
	"fmt"
	"slices"
	"sort"
	"strings"

	"go.starlark.net/lib/math"
	"go.starlark.net/resolve"
	"go.starlark.net/starlark"
	"go.starlark.net/starlarkjson"
	"go.starlark.net/syntax"

	"github.com/hivemind/taskworker/internal/names"
)

// fileOptions is the Starlark dialect scripts are written in: Python's
// while loops, top-level if/for, reassigned globals and sets are allowed;
// recursion is not (docs/RATIONALE.md, Starlark, "Which Starlark?").
var fileOptions = &syntax.FileOptions{
	Set:             true,
	While:           true,
	TopLevelControl: true,
	GlobalReassign:  true,
}

// libraryModules are the predeclared modules that are pure computation.
// The time module is left out: it reads the time zone database from disk.
var libraryModules = starlark.StringDict{
	"json": starlarkjson.Module,
	"math": math.Module,
}

// hostBuiltins are the predeclared names served by the host over the pipe
// (docs/RATIONALE.md, Starlark, "Host capabilities"). Every script sees the
// same names, granted or not, so a script compiles the same everywhere and
// a missing grant is a clear error at call time, not an undefined name.
var hostBuiltins = []string{"log", "secret", "http"}

// isPredeclared reports whether a global name is provided to every script.
func isPredeclared(name string) bool {
	return libraryModules.Has(name) || slices.Contains(hostBuiltins, name)
}

// Check reports whether source, a script named name (for messages, e.g.
// "add.star"), compiles and defines function at top level, as a deploy
// must. The error wraps ErrInvalidScript and, for a compile error, a
// *ScriptError with the line. Check compiles in-process without running
// anything: its cost is bounded by the source's size, which the caller
// must bound (Config.MaxSource).
func Check(name string, source []byte, function string) (err error) {
	defer func() {
		// Check runs in the worker or pool process: a compiler bug must not
		// take it down.
		if r := recover(); r != nil {
			err = fmt.Errorf("%w: %s: the Starlark compiler failed on it: %v", ErrInvalidScript, name, r)
		}
	}()
	f, _, err := compile(name, source)
	if err != nil {
		return err
	}
	var defined []string
	for _, stmt := range f.Stmts {
		switch s := stmt.(type) {
		case *syntax.DefStmt:
			defined = append(defined, s.Name.Name)
		case *syntax.AssignStmt:
			if id, ok := s.LHS.(*syntax.Ident); ok && s.Op == syntax.EQ {
				defined = append(defined, id.Name)
			}
		}
	}
	if slices.Contains(defined, function) {
		return nil
	}
	if len(defined) == 0 {
		return fmt.Errorf("%w: %s defines no top-level function; add \"def %s(...):\"", ErrInvalidScript, name, function)
	}
	sort.Strings(defined)
	defined = slices.Compact(defined)
	return fmt.Errorf("%w: %s has no top-level function %q; it defines %s", ErrInvalidScript, name, function,
		names.Truncate(strings.Join(defined, ", "), 200))
}

// compile parses and resolves a script. Errors wrap ErrInvalidScript and a
// *ScriptError.
func compile(name string, source []byte) (*syntax.File, *starlark.Program, error) {
	f, err := fileOptions.Parse(name, source, 0)
	if err != nil {
		return nil, nil, compileError(name, err)
	}
	prog, err := starlark.FileProgram(f, isPredeclared)
	if err != nil {
		return nil, nil, compileError(name, err)
	}
	if prog.NumLoads() > 0 {
		_, pos := prog.Load(0)
		return nil, nil, fmt.Errorf("%w: %w", ErrInvalidScript, &ScriptError{
			Script: name, Line: int(pos.Line), Col: int(pos.Col),
			Message: "load() is not supported: a script is one file; put what it needs in it",
		})
	}
	return f, prog, nil
}

// compileError turns a parse or resolve error into a *ScriptError wrapped
// with ErrInvalidScript. A resolve error lists every undefined name; the
// first is reported with its position, and the count of the rest.
func compileError(name string, err error) error {
	se := &ScriptError{Script: name, Message: err.Error()}
	var serr syntax.Error
	var list resolve.ErrorList
	switch {
	case errors.As(err, &serr):
		se.Line, se.Col, se.Message = int(serr.Pos.Line), int(serr.Pos.Col), serr.Msg
	case errors.As(err, &list) && len(list) > 0:
		se.Line, se.Col, se.Message = int(list[0].Pos.Line), int(list[0].Pos.Col), list[0].Msg
		if len(list) > 1 {
			se.Message += fmt.Sprintf(" (and %d more errors)", len(list)-1)
		}
	}
	if strings.HasPrefix(se.Message, "undefined: ") {
		se.Message += "; scripts have Starlark's built-ins, json, math, log, secret and http (through the pool), and no file, socket or environment access of their own"
	}
	return fmt.Errorf("%w: %w", ErrInvalidScript, se)
}
