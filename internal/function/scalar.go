package function

import (
	"encoding"
	"encoding/json"
	"reflect"
	"strconv"
	"unsafe"
)

// A fast path for the common call: a JSON array of numbers, booleans and
// plain strings bound to parameters of those kinds, and a result of an
// integer or bool kind. encoding/json by reflection costs about 25 µs a call
// in WebAssembly for add(1, 2) (guest SDK); this costs a few. Anything it
// does not handle, or does not parse, goes the general way, which also
// writes the error messages, so behavior is the same either way
// (FuzzScalarPath checks that it is). A Func made by Direct1 or Direct2
// goes further: it binds into the parameters' own variables and appends
// its result without a reflect.Value (Func.typed, bindTyped, appendKind;
// FuzzTypedPath).

// scalarParams reports whether every parameter is a number, bool or string
// that encoding/json decodes as such.
func scalarParams(params []reflect.Type) bool {
	for _, p := range params {
		if !isScalar(p.Kind()) || ownJSON(p) {
			return false
		}
	}
	return len(params) > 0
}

// plainResult reports whether appendScalar writes a result of type t as
// encoding/json would.
func plainResult(t reflect.Type) bool { return appendable(t.Kind()) && !ownJSON(t) }

var (
	jsonMarshaler   = reflect.TypeFor[json.Marshaler]()
	jsonUnmarshaler = reflect.TypeFor[json.Unmarshaler]()
	textMarshaler   = reflect.TypeFor[encoding.TextMarshaler]()
	textUnmarshaler = reflect.TypeFor[encoding.TextUnmarshaler]()
)

// ownJSON reports whether encoding/json encodes or decodes a value of type
// t by its own methods rather than by its kind: a named integer with
// MarshalJSON, say, that writes itself as a name.
func ownJSON(t reflect.Type) bool {
	for _, i := range []reflect.Type{jsonMarshaler, jsonUnmarshaler, textMarshaler, textUnmarshaler} {
		if t.Implements(i) || reflect.PointerTo(t).Implements(i) {
			return true
		}
	}
	return false
}

func isScalar(k reflect.Kind) bool {
	switch k {
	case reflect.Int, reflect.Int8, reflect.Int16, reflect.Int32, reflect.Int64,
		reflect.Uint, reflect.Uint8, reflect.Uint16, reflect.Uint32, reflect.Uint64,
		reflect.Float32, reflect.Float64, reflect.Bool, reflect.String:
		return true
	}
	return false
}

// bindScalars binds a JSON array of scalars to f.params, appending to args.
// ok is false when the input is anything else, or a value does not fit its
// parameter exactly as encoding/json would take it.
func (f *Func) bindScalars(input []byte, args []reflect.Value) (_ []reflect.Value, ok bool) {
	p := scanner{b: input}
	if !p.byte('[') {
		return nil, false
	}
	for i, t := range f.params {
		if i > 0 && !p.byte(',') {
			return nil, false
		}
		tok := p.token()
		if tok == nil {
			return nil, false
		}
		v := reflect.New(t).Elem()
		if !setScalar(v, tok) {
			return nil, false
		}
		args = append(args, v)
	}
	if !p.byte(']') || !p.end() {
		return nil, false
	}
	return args, true
}

// setScalar sets v, addressable, from one JSON token, as encoding/json
// would, or reports false for anything it is not sure of (setKind).
func setScalar(v reflect.Value, tok []byte) bool {
	return v.CanAddr() && setKind(v.Addr().UnsafePointer(), v.Kind(), tok)
}

// setKind sets the value of kind k at p from one JSON token, as
// encoding/json would, or reports false for anything it is not sure of
// (escapes in strings, null, numbers out of range or in a form
// encoding/json would refuse for the kind). Any type of one of these kinds
// has its kind's layout, so it serves named types as well.
func setKind(p unsafe.Pointer, k reflect.Kind, tok []byte) bool {
	switch k {
	case reflect.String:
		if len(tok) < 2 || tok[0] != '"' || tok[len(tok)-1] != '"' {
			return false
		}
		s := tok[1 : len(tok)-1]
		for _, c := range s {
			if c == '\\' || c == '"' || c < 0x20 || c >= 0x80 {
				return false // escapes, and UTF-8 that encoding/json would check
			}
		}
		*(*string)(p) = string(s)
	case reflect.Bool:
		switch string(tok) {
		case "true":
			*(*bool)(p) = true
		case "false":
			*(*bool)(p) = false
		default:
			return false
		}
	case reflect.Int, reflect.Int8, reflect.Int16, reflect.Int32, reflect.Int64:
		n, err := strconv.ParseInt(unsafeString(tok), 10, kindBits(k))
		if err != nil || !plainInteger(tok) {
			return false
		}
		switch k {
		case reflect.Int:
			*(*int)(p) = int(n)
		case reflect.Int8:
			*(*int8)(p) = int8(n)
		case reflect.Int16:
			*(*int16)(p) = int16(n)
		case reflect.Int32:
			*(*int32)(p) = int32(n)
		default:
			*(*int64)(p) = n
		}
	case reflect.Uint, reflect.Uint8, reflect.Uint16, reflect.Uint32, reflect.Uint64:
		n, err := strconv.ParseUint(unsafeString(tok), 10, kindBits(k))
		if err != nil || !plainInteger(tok) {
			return false
		}
		switch k {
		case reflect.Uint:
			*(*uint)(p) = uint(n)
		case reflect.Uint8:
			*(*uint8)(p) = uint8(n)
		case reflect.Uint16:
			*(*uint16)(p) = uint16(n)
		case reflect.Uint32:
			*(*uint32)(p) = uint32(n)
		default:
			*(*uint64)(p) = n
		}
	case reflect.Float32, reflect.Float64:
		if !plainInteger(tok) {
			return false // leave fractions and exponents to encoding/json
		}
		n, err := strconv.ParseFloat(unsafeString(tok), kindBits(k))
		if err != nil {
			return false
		}
		if k == reflect.Float32 {
			*(*float32)(p) = float32(n)
		} else {
			*(*float64)(p) = n
		}
	default:
		return false
	}
	return true
}

// unsafeString is tok as a string without a copy, for a parse whose error
// (which would keep it) is dropped at once.
func unsafeString(tok []byte) string { return unsafe.String(unsafe.SliceData(tok), len(tok)) }

// kindBits is the size in bits of a number of kind k.
func kindBits(k reflect.Kind) int {
	switch k {
	case reflect.Int8, reflect.Uint8:
		return 8
	case reflect.Int16, reflect.Uint16:
		return 16
	case reflect.Int32, reflect.Uint32, reflect.Float32:
		return 32
	case reflect.Int, reflect.Uint:
		return strconv.IntSize
	}
	return 64
}

// plainInteger reports whether tok is a JSON integer: an optional minus,
// then 0 or a digit 1-9 followed by digits.
func plainInteger(tok []byte) bool {
	if len(tok) > 0 && tok[0] == '-' {
		tok = tok[1:]
	}
	if len(tok) == 0 || len(tok) > 1 && tok[0] == '0' {
		return false
	}
	for _, c := range tok {
		if c < '0' || c > '9' {
			return false
		}
	}
	return true
}

// scanner walks a JSON array of scalars.
type scanner struct {
	b []byte
	i int
}

func (s *scanner) space() {
	for s.i < len(s.b) && (s.b[s.i] == ' ' || s.b[s.i] == '\t' || s.b[s.i] == '\n' || s.b[s.i] == '\r') {
		s.i++
	}
}

// byte consumes c, after any space.
func (s *scanner) byte(c byte) bool {
	s.space()
	if s.i < len(s.b) && s.b[s.i] == c {
		s.i++
		return true
	}
	return false
}

func (s *scanner) end() bool {
	s.space()
	return s.i == len(s.b)
}

// token returns the next scalar token: a string with its quotes, or a run
// of the characters numbers and literals are made of.
func (s *scanner) token() []byte {
	s.space()
	start := s.i
	if s.i < len(s.b) && s.b[s.i] == '"' {
		for s.i++; s.i < len(s.b); s.i++ {
			switch s.b[s.i] {
			case '\\':
				s.i++
			case '"':
				s.i++
				return s.b[start:s.i]
			}
		}
		return nil
	}
	for s.i < len(s.b) {
		c := s.b[s.i]
		if c == ',' || c == ']' || c == ' ' || c == '\t' || c == '\n' || c == '\r' {
			break
		}
		s.i++
	}
	if s.i == start {
		return nil
	}
	return s.b[start:s.i]
}

// appendScalar appends the JSON of a result of an integer or bool kind
// (appendable), as encoding/json writes it for a type with no methods of
// its own for it (plainResult).
func appendScalar(b []byte, v reflect.Value) []byte {
	switch {
	case v.Kind() == reflect.Bool:
		return strconv.AppendBool(b, v.Bool())
	case v.CanInt():
		return strconv.AppendInt(b, v.Int(), 10)
	default:
		return strconv.AppendUint(b, v.Uint(), 10)
	}
}

// appendable reports whether appendScalar takes a result of kind k.
func appendable(k reflect.Kind) bool {
	switch k {
	case reflect.Int, reflect.Int8, reflect.Int16, reflect.Int32, reflect.Int64,
		reflect.Uint, reflect.Uint8, reflect.Uint16, reflect.Uint32, reflect.Uint64, reflect.Bool:
		return true
	}
	return false
}

// appendKind is appendScalar for the value of kind k at p, which must be
// one appendScalar takes.
func appendKind(b []byte, p unsafe.Pointer, k reflect.Kind) []byte {
	switch k {
	case reflect.Int:
		return strconv.AppendInt(b, int64(*(*int)(p)), 10)
	case reflect.Int8:
		return strconv.AppendInt(b, int64(*(*int8)(p)), 10)
	case reflect.Int16:
		return strconv.AppendInt(b, int64(*(*int16)(p)), 10)
	case reflect.Int32:
		return strconv.AppendInt(b, int64(*(*int32)(p)), 10)
	case reflect.Int64:
		return strconv.AppendInt(b, *(*int64)(p), 10)
	case reflect.Uint:
		return strconv.AppendUint(b, uint64(*(*uint)(p)), 10)
	case reflect.Uint8:
		return strconv.AppendUint(b, uint64(*(*uint8)(p)), 10)
	case reflect.Uint16:
		return strconv.AppendUint(b, uint64(*(*uint16)(p)), 10)
	case reflect.Uint32:
		return strconv.AppendUint(b, uint64(*(*uint32)(p)), 10)
	case reflect.Uint64:
		return strconv.AppendUint(b, *(*uint64)(p), 10)
	case reflect.Bool:
		return strconv.AppendBool(b, *(*bool)(p))
	}
	panic("appendKind of " + k.String())
}

// bindTyped is bindScalars for the fast path of a Func made by Direct1 or
// Direct2: it binds a JSON array of scalars into the parameters' own
// variables, with no reflect.Value. ok is false for any input bindScalars
// would not take; the general path then answers it.
func bindTyped(input []byte, params []typedParam) (ok bool) {
	p := scanner{b: input}
	if !p.byte('[') {
		return false
	}
	for i, a := range params {
		if i > 0 && !p.byte(',') {
			return false
		}
		tok := p.token()
		if tok == nil || !setKind(a.p, a.kind, tok) {
			return false
		}
	}
	return p.byte(']') && p.end()
}

// typedParam is a parameter's variable and its kind.
type typedParam struct {
	p    unsafe.Pointer
	kind reflect.Kind
}
