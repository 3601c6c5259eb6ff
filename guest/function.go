package guest

import (
	"context"
	"errors"
	"fmt"
	"sync"

	"github.com/hivemind/taskworker/internal/function"
	"github.com/hivemind/taskworker/internal/names"
)

// invalidArgumentPrefix starts the message of every error about the call's
// arguments; the host maps it to the gRPC code InvalidArgument (docs/ABI.md).
const invalidArgumentPrefix = "invalid argument: "

// Raw is the escape from JSON: a function whose only parameter (after the
// context) is a Raw receives the call's input as it came, unparsed, and a
// Raw result is the output as it is, unencoded.
type Raw = function.Raw

var (
	mu        sync.RWMutex
	functions = map[string]*function.Func{}
)

// Function registers fn under name, for Run to call. fn is any func whose
// parameters are an optional leading context.Context followed by values
// that encoding/json can decode, and whose results are at most one value
// that encoding/json can encode followed by an optional error: the shapes
// and the binding of a native function (docs/ABI.md, "Arguments and
// results"), by the same code.
//
// Function panics if name is not a valid function name, fn is not such a
// func or name is already registered: each is a mistake in the module's
// code, found when it is first loaded.
func Function(name string, fn any) {
	register("guest.Function", name, func() (*function.Func, error) { return function.Bind(name, fn) })
}

// Function1 and Function2 register fn, a func of one or two parameters
// and one result, as Function does, with the same binding, but call it
// directly rather than through reflection. When the parameters are numbers,
// bools or plain strings and the result an integer or a bool, a call of
// plain JSON arguments involves no reflection at all: in WebAssembly,
// add(1, 2) then costs about 6 µs in a warm instance, against 13-16 µs
// with reflection binding the arguments. A parameter may be a
// context.Context, as with Function.
//
//	guest.Function2("add", func(a, b int) int { return a + b })
func Function1[A, R any](name string, fn func(A) R) {
	register("guest.Function1", name, func() (*function.Func, error) { return function.Direct1(name, fn) })
}

func Function2[A, B, R any](name string, fn func(A, B) R) {
	register("guest.Function2", name, func() (*function.Func, error) { return function.Direct2(name, fn) })
}

// register binds a function under name with bind, for Run to call, or
// panics (from caller) if it cannot.
func register(caller, name string, bind func() (*function.Func, error)) {
	if err := names.Function(name); err != nil {
		panic(caller + ": " + err.Error())
	}
	f, err := bind()
	if err != nil {
		panic(caller + ": " + err.Error())
	}
	mu.Lock()
	defer mu.Unlock()
	if _, dup := functions[name]; dup {
		panic(fmt.Sprintf("%s: %q is already registered", caller, name))
	}
	functions[name] = f
}

// invoke calls the function registered under name with the plugin input and
// returns the plugin output.
func invoke(name string, input []byte) ([]byte, error) {
	mu.RLock()
	f := functions[name]
	mu.RUnlock()
	if f == nil {
		return nil, fmt.Errorf("no function %q is registered in this module (guest.Function)", name)
	}
	out, err := f.Call(context.Background(), input)
	var argErr *function.ArgumentError
	if errors.As(err, &argErr) {
		return nil, errors.New(invalidArgumentPrefix + err.Error())
	}
	return out, err
}
