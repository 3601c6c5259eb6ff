package guest

import (
	"bytes"
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"reflect"
	"sync"
)

// invalidArgumentPrefix starts the message of every error about the call's
// arguments; the host maps it to the gRPC code InvalidArgument (docs/ABI.md).
const invalidArgumentPrefix = "invalid argument: "

var (
	contextType = reflect.TypeFor[context.Context]()
	errorType   = reflect.TypeFor[error]()
	bytesType   = reflect.TypeFor[[]byte]()
)

// function is a registered Go func with its binding worked out once.
type function struct {
	name       string
	fn         reflect.Value
	hasContext bool
	params     []reflect.Type // the arguments, after the optional context
	hasResult  bool
	hasError   bool
	rawInput   bool // one string or []byte parameter: the input as it is
	scalars    bool // every parameter a number, bool or string: bindScalars may bind them
}

var (
	mu        sync.RWMutex
	functions = map[string]*function{}
)

// Function registers fn under name, for Run to call. fn is any func whose
// parameters are an optional leading context.Context followed by values
// that encoding/json can decode, and whose results are at most one value
// that encoding/json can encode followed by an optional error.
//
// Function panics if fn is not such a func or name is already registered:
// both are mistakes in the module's code, found when it is first loaded.
func Function(name string, fn any) {
	f, err := newFunction(name, fn)
	if err != nil {
		panic("guest.Function: " + err.Error())
	}
	mu.Lock()
	defer mu.Unlock()
	if _, dup := functions[name]; dup {
		panic(fmt.Sprintf("guest.Function: %q is already registered", name))
	}
	functions[name] = f
}

func newFunction(name string, fn any) (*function, error) {
	if name == "" {
		return nil, errors.New("the name is empty")
	}
	v := reflect.ValueOf(fn)
	if v.Kind() != reflect.Func || v.IsNil() {
		return nil, fmt.Errorf("%q: want a func, got %T", name, fn)
	}
	t := v.Type()
	if t.IsVariadic() {
		return nil, fmt.Errorf("%q: variadic funcs are not supported; take a slice instead", name)
	}
	f := &function{name: name, fn: v}
	for i := range t.NumIn() {
		p := t.In(i)
		if p == contextType {
			if i != 0 {
				return nil, fmt.Errorf("%q: context.Context must be the first parameter", name)
			}
			f.hasContext = true
			continue
		}
		if p.Kind() == reflect.Func || p.Kind() == reflect.Chan || p.Kind() == reflect.Interface && p != reflect.TypeFor[any]() {
			return nil, fmt.Errorf("%q: parameter %d has type %s, which JSON cannot carry", name, i+1, p)
		}
		f.params = append(f.params, p)
	}
	switch t.NumOut() {
	case 0:
	case 1:
		if t.Out(0) == errorType {
			f.hasError = true
		} else {
			f.hasResult = true
		}
	case 2:
		if t.Out(1) != errorType {
			return nil, fmt.Errorf("%q: the second result must be error, not %s", name, t.Out(1))
		}
		f.hasResult, f.hasError = true, true
	default:
		return nil, fmt.Errorf("%q: at most one result and an error, got %d results", name, t.NumOut())
	}
	f.rawInput = len(f.params) == 1 && (f.params[0].Kind() == reflect.String || f.params[0] == bytesType)
	f.scalars = !f.rawInput && scalarParams(f.params)
	return f, nil
}

// invoke calls the function registered under name with the plugin input and
// returns the plugin output.
func invoke(name string, input []byte) (output []byte, err error) {
	mu.RLock()
	f := functions[name]
	mu.RUnlock()
	if f == nil {
		return nil, fmt.Errorf("no function %q is registered in this module (guest.Function)", name)
	}
	args, err := f.bind(input)
	if err != nil {
		return nil, errors.New(invalidArgumentPrefix + err.Error())
	}
	defer func() {
		if r := recover(); r != nil {
			output, err = nil, fmt.Errorf("panic in %s: %v", name, r)
		}
	}()
	return f.results(f.fn.Call(args))
}

// bind turns the plugin input into the func's arguments.
func (f *function) bind(input []byte) ([]reflect.Value, error) {
	args := make([]reflect.Value, 0, len(f.params)+1)
	if f.hasContext {
		args = append(args, reflect.ValueOf(context.Background()))
	}
	if f.rawInput {
		v := reflect.New(f.params[0]).Elem()
		if v.Kind() == reflect.String {
			v.SetString(string(input))
		} else {
			v.SetBytes(bytes.Clone(input))
		}
		return append(args, v), nil
	}
	trimmed := bytes.TrimSpace(input)
	if len(f.params) == 0 {
		if len(trimmed) == 0 || string(trimmed) == "null" || string(trimmed) == "[]" {
			return args, nil
		}
		return nil, errors.New("this function takes no arguments")
	}
	if len(trimmed) > 0 && trimmed[0] == '{' && len(f.params) == 1 && isStruct(f.params[0]) {
		v := reflect.New(f.params[0])
		if err := json.Unmarshal(trimmed, v.Interface()); err != nil {
			return nil, fmt.Errorf("argument 1 (%s): %v", f.params[0], err)
		}
		return append(args, v.Elem()), nil
	}
	if f.scalars {
		if bound, ok := f.bindScalars(trimmed, args); ok {
			return bound, nil
		}
	}
	var raw []json.RawMessage
	if len(trimmed) == 0 || trimmed[0] != '[' || json.Unmarshal(trimmed, &raw) != nil {
		return nil, fmt.Errorf("want the %d arguments as a JSON array, got %q", len(f.params), abbreviate(trimmed))
	}
	if len(raw) != len(f.params) {
		return nil, fmt.Errorf("this function takes %d arguments, got %d", len(f.params), len(raw))
	}
	for i, p := range f.params {
		v := reflect.New(p)
		if err := json.Unmarshal(raw[i], v.Interface()); err != nil {
			return nil, fmt.Errorf("argument %d (%s): %v", i+1, p, err)
		}
		args = append(args, v.Elem())
	}
	return args, nil
}

// results turns the func's results into the plugin output or error.
func (f *function) results(out []reflect.Value) ([]byte, error) {
	if f.hasError {
		if err, _ := out[len(out)-1].Interface().(error); err != nil {
			return nil, err
		}
	}
	if !f.hasResult {
		return nil, nil
	}
	v := out[0]
	switch {
	case v.Kind() == reflect.String:
		return []byte(v.String()), nil
	case v.Type() == bytesType:
		return v.Bytes(), nil
	}
	if b, ok := appendScalar(nil, v); ok {
		return b, nil
	}
	b, err := json.Marshal(v.Interface())
	if err != nil {
		return nil, fmt.Errorf("encoding the result of %s as JSON: %v", f.name, err)
	}
	return b, nil
}

func isStruct(t reflect.Type) bool {
	return t.Kind() == reflect.Struct || t.Kind() == reflect.Pointer && t.Elem().Kind() == reflect.Struct
}

func abbreviate(b []byte) string {
	const max = 40
	if len(b) > max {
		return string(b[:max]) + "..."
	}
	return string(b)
}
