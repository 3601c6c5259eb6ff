package function

import (
	"bytes"
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"reflect"
	"runtime/debug"
	"strings"
	"unsafe"
)

// ArgumentError reports arguments that do not fit a function's parameters.
// It is the caller's fault: the RPC layer answers InvalidArgument.
type ArgumentError struct {
	Function string
	Msg      string
}

func (e *ArgumentError) Error() string { return e.Function + ": " + e.Msg }

// PanicError reports a function that panicked. The worker survives it.
type PanicError struct {
	Function string
	Value    any
	Stack    []byte
}

func (e *PanicError) Error() string {
	return fmt.Sprintf("%s panicked: %v", e.Function, e.Value)
}

// Raw is the escape from JSON: a function whose only parameter (after the
// context) is a Raw receives the call's arguments as they came, unparsed,
// and a result of type Raw is the call's result as it is, unencoded.
type Raw []byte

var (
	contextType = reflect.TypeFor[context.Context]()
	errorType   = reflect.TypeFor[error]()
	rawType     = reflect.TypeFor[Raw]()
	anyType     = reflect.TypeFor[any]()
)

// Func is a Go function prepared for calls with JSON arguments. It is safe
// for concurrent use if the function is.
type Func struct {
	name      string
	fn        reflect.Value
	withCtx   bool
	params    []reflect.Type
	hasResult bool
	hasErr    bool
	// objectParam is true when the only parameter is a struct (or a pointer to
	// one), so a JSON object may stand for the whole argument list.
	objectParam bool
	// rawParam is true when the only parameter is a Raw.
	rawParam bool
	// scalars is true when every parameter is a number, bool or string, so
	// bindScalars may bind them without encoding/json; plainResult when
	// appendScalar may write the result.
	scalars, plainResult bool
	// direct, if set, calls the function with its arguments directly,
	// rather than through reflect.Value.Call (Direct1, Direct2).
	direct func(in []reflect.Value) []reflect.Value
	// typed, if set, is the whole call without reflection, for a Func made
	// by Direct1 or Direct2 whose parameters are scalars and whose result
	// appendScalar takes. ok is false, before the function is called, when
	// the arguments are not a plain JSON array of such scalars: the
	// general path then answers, with its errors.
	typed func(args []byte) (result []byte, ok bool, err error)
}

// Bind prepares fn for calls. It fails if fn is not a func, or has a shape
// other than func([context.Context,] params...) [result] [error], or if a
// parameter or result cannot be carried in JSON.
func Bind(name string, fn any) (*Func, error) {
	if fn == nil {
		return nil, fmt.Errorf("function %q: nil func", name)
	}
	v := reflect.ValueOf(fn)
	t := v.Type()
	if t.Kind() != reflect.Func {
		return nil, fmt.Errorf("function %q: got %s, want a func", name, t)
	}
	if t.IsVariadic() {
		return nil, fmt.Errorf("function %q: variadic funcs are not supported; take a slice instead", name)
	}
	f := &Func{name: name, fn: v}
	for i := 0; i < t.NumIn(); i++ {
		p := t.In(i)
		if p == contextType {
			if i != 0 {
				return nil, fmt.Errorf("function %q: context.Context must be the first parameter", name)
			}
			f.withCtx = true
			continue
		}
		if err := jsonCapable(p); err != nil {
			return nil, fmt.Errorf("function %q: parameter %d: %w", name, i+1, err)
		}
		f.params = append(f.params, p)
	}
	switch t.NumOut() {
	case 0:
	case 1:
		if t.Out(0) == errorType {
			f.hasErr = true
		} else {
			f.hasResult = true
		}
	case 2:
		if t.Out(1) != errorType {
			return nil, fmt.Errorf("function %q: the second result must be error, got %s", name, t.Out(1))
		}
		f.hasResult, f.hasErr = true, true
	default:
		return nil, fmt.Errorf("function %q: returns %d results; return at most a value and an error", name, t.NumOut())
	}
	if f.hasResult {
		if err := jsonCapable(t.Out(0)); err != nil {
			return nil, fmt.Errorf("function %q: result: %w", name, err)
		}
	}
	if len(f.params) == 1 {
		p := f.params[0]
		f.rawParam = p == rawType
		if p.Kind() == reflect.Pointer {
			p = p.Elem()
		}
		f.objectParam = p.Kind() == reflect.Struct
	}
	f.scalars = scalarParams(f.params)
	f.plainResult = f.hasResult && plainResult(t.Out(0))
	return f, nil
}

func jsonCapable(t reflect.Type) error {
	switch t.Kind() {
	case reflect.Chan, reflect.Func, reflect.UnsafePointer, reflect.Complex64, reflect.Complex128:
		return fmt.Errorf("type %s cannot be carried in JSON", t)
	case reflect.Interface:
		if t != anyType {
			return fmt.Errorf("type %s cannot be decoded from JSON; use any", t)
		}
	}
	return nil
}

// Name returns the name the function was bound under.
func (f *Func) Name() string { return f.name }

// Signature describes the parameters and results for listings, e.g.
// "func(int, int) int".
func (f *Func) Signature() string {
	var b strings.Builder
	b.WriteString("func(")
	for i, p := range f.params {
		if i > 0 {
			b.WriteString(", ")
		}
		b.WriteString(p.String())
	}
	b.WriteString(")")
	t := f.fn.Type()
	switch {
	case f.hasResult && f.hasErr:
		fmt.Fprintf(&b, " (%s, error)", t.Out(0))
	case f.hasResult:
		fmt.Fprintf(&b, " %s", t.Out(0))
	case f.hasErr:
		b.WriteString(" error")
	}
	return strings.ReplaceAll(b.String(), "interface {}", "any")
}

// Call decodes args, calls the function and returns its result as JSON
// ("null" when it has none; a Raw result as it is). An *ArgumentError
// means the arguments did not fit; a *PanicError that the function
// panicked; any other error is the function's own.
func (f *Func) Call(ctx context.Context, args []byte) (result []byte, err error) {
	if f.typed != nil {
		if result, ok, err := f.typed(args); ok {
			return result, err
		}
	}
	in, err := f.decode(args)
	if err != nil {
		return nil, err
	}
	if f.withCtx {
		in = append([]reflect.Value{reflect.ValueOf(ctx)}, in...)
	}
	out, err := f.invoke(in)
	if err != nil {
		return nil, err
	}
	if f.hasErr {
		if e := out[len(out)-1]; !e.IsNil() {
			return nil, e.Interface().(error)
		}
	}
	if !f.hasResult {
		return []byte("null"), nil
	}
	if v := out[0]; v.Type() == rawType {
		return v.Bytes(), nil
	} else if f.plainResult {
		return appendScalar(nil, v), nil
	}
	result, err = json.Marshal(out[0].Interface())
	if err != nil {
		return nil, fmt.Errorf("%s: encoding the result as JSON: %w", f.name, err)
	}
	return result, nil
}

func (f *Func) invoke(in []reflect.Value) (out []reflect.Value, err error) {
	err = f.protect(func() {
		if f.direct != nil {
			out = f.direct(in)
		} else {
			out = f.fn.Call(in)
		}
	})
	return out, err
}

// protect runs call, turning a panic into a *PanicError.
func (f *Func) protect(call func()) (err error) {
	defer func() {
		if r := recover(); r != nil {
			err = &PanicError{Function: f.name, Value: r, Stack: debug.Stack()}
		}
	}()
	call()
	return nil
}

// Direct1 and Direct2 are Bind for a func of one or two parameters and one
// result, which the Func then calls directly rather than through
// reflect.Value.Call: the same binding (the arguments decoded and the
// result encoded by the same code), for less. Reflection is most of what a
// call of a small function costs in WebAssembly (docs/RATIONALE.md, "Why
// does a guest function of scalars bind with no reflect.Value at all?");
// natively it costs little. For scalars they go further (Func.typed).
func Direct1[A, R any](name string, fn func(A) R) (*Func, error) {
	f, err := Bind(name, fn)
	if err != nil {
		return nil, err
	}
	f.direct = func(in []reflect.Value) []reflect.Value {
		return result(fn(arg[A](in[0])))
	}
	if f.mayType() {
		ka, kr := kindOf[A](), kindOf[R]()
		f.typed = func(args []byte) ([]byte, bool, error) {
			var a A
			return callTyped(f, args, []typedParam{{unsafe.Pointer(&a), ka}}, kr, func() R { return fn(a) })
		}
	}
	return f, nil
}

func Direct2[A, B, R any](name string, fn func(A, B) R) (*Func, error) {
	f, err := Bind(name, fn)
	if err != nil {
		return nil, err
	}
	f.direct = func(in []reflect.Value) []reflect.Value {
		return result(fn(arg[A](in[0]), arg[B](in[1])))
	}
	if f.mayType() {
		ka, kb, kr := kindOf[A](), kindOf[B](), kindOf[R]()
		f.typed = func(args []byte) ([]byte, bool, error) {
			var a A
			var b B
			return callTyped(f, args, []typedParam{{unsafe.Pointer(&a), ka}, {unsafe.Pointer(&b), kb}}, kr, func() R { return fn(a, b) })
		}
	}
	return f, nil
}

// mayType reports whether f, made by Direct1 or Direct2, may take the
// typed path: no context (whose parameter would come first), scalar
// parameters, a result appendScalar writes.
func (f *Func) mayType() bool { return !f.withCtx && f.scalars && f.plainResult }

func kindOf[T any]() reflect.Kind { return reflect.TypeFor[T]().Kind() }

// callTyped is the typed path of a call: it binds args into params, the
// variables call reads, calls it and appends its result, of kind kr. ok is
// false, before call runs, for arguments bindTyped does not take.
func callTyped[R any](f *Func, args []byte, params []typedParam, kr reflect.Kind, call func() R) (result []byte, ok bool, err error) {
	if !bindTyped(args, params) {
		return nil, false, nil
	}
	var r R
	if err := f.protect(func() { r = call() }); err != nil {
		return nil, true, err
	}
	return appendKind(nil, unsafe.Pointer(&r), kr), true, nil
}

// arg is an argument decode made, as a T: decoded arguments are
// addressable, read in place; a context or a Raw is not.
func arg[T any](v reflect.Value) T {
	if v.CanAddr() {
		return *(*T)(v.Addr().UnsafePointer())
	}
	return v.Interface().(T)
}

// result is r as reflect.Value.Call returns it: of R's static type, even
// an interface's.
func result[R any](r R) []reflect.Value { return []reflect.Value{reflect.ValueOf(&r).Elem()} }

func (f *Func) decode(args []byte) ([]reflect.Value, error) {
	if f.rawParam {
		return []reflect.Value{reflect.ValueOf(Raw(bytes.Clone(args)))}, nil
	}
	args = bytes.TrimSpace(args)
	if len(args) == 0 || bytes.Equal(args, []byte("null")) {
		args = []byte("[]")
	}
	if args[0] == '{' {
		if !f.objectParam {
			return nil, f.argErr("got a JSON object; this function takes %s, so pass a JSON array", f.describeParams())
		}
		v, err := f.decodeOne(0, args)
		if err != nil {
			return nil, err
		}
		return []reflect.Value{v}, nil
	}
	if f.scalars {
		if in, ok := f.bindScalars(args, make([]reflect.Value, 0, len(f.params))); ok {
			return in, nil
		}
	}
	var raw []json.RawMessage
	if err := json.Unmarshal(args, &raw); err != nil {
		return nil, f.argErr("arguments must be a JSON array (or an object for a one-struct function): %v", err)
	}
	if len(raw) != len(f.params) {
		return nil, f.argErr("takes %s, got %d", f.describeParams(), len(raw))
	}
	in := make([]reflect.Value, len(raw))
	for i, r := range raw {
		v, err := f.decodeOne(i, r)
		if err != nil {
			return nil, err
		}
		in[i] = v
	}
	return in, nil
}

func (f *Func) decodeOne(i int, raw []byte) (reflect.Value, error) {
	p := reflect.New(f.params[i])
	dec := json.NewDecoder(bytes.NewReader(raw))
	if err := dec.Decode(p.Interface()); err != nil {
		var te *json.UnmarshalTypeError
		if errors.As(err, &te) {
			return reflect.Value{}, f.argErr("argument %d (%s): cannot use JSON %s", i+1, f.params[i], te.Value)
		}
		return reflect.Value{}, f.argErr("argument %d (%s): %v", i+1, f.params[i], err)
	}
	return p.Elem(), nil
}

func (f *Func) describeParams() string {
	if len(f.params) == 0 {
		return "no arguments"
	}
	types := make([]string, len(f.params))
	for i, p := range f.params {
		types[i] = p.String()
	}
	noun := "arguments"
	if len(f.params) == 1 {
		noun = "argument"
	}
	return fmt.Sprintf("%d %s (%s)", len(f.params), noun, strings.Join(types, ", "))
}

func (f *Func) argErr(format string, a ...any) error {
	return &ArgumentError{Function: f.name, Msg: fmt.Sprintf(format, a...)}
}
