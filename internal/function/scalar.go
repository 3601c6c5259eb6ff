package function

import (
	"reflect"
	"strconv"
)

// A fast path for the common call: a JSON array of numbers, booleans and
// plain strings bound to parameters of those kinds, and a result of an
// integer or bool kind. encoding/json by reflection costs about 25 µs a call
// in WebAssembly for add(1, 2) (guest SDK); this costs a few. Anything it
// does not handle, or does not parse, goes the general way, which also
// writes the error messages, so behavior is the same either way
// (FuzzScalarPath checks that it is).

// scalarParams reports whether every parameter is a number, bool or string.
func scalarParams(params []reflect.Type) bool {
	for _, p := range params {
		if !isScalar(p.Kind()) {
			return false
		}
	}
	return len(params) > 0
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

// setScalar sets v from one JSON token, as encoding/json would, or reports
// false for anything it is not sure of (escapes in strings, null, numbers
// out of range or in a form encoding/json would refuse for the kind).
func setScalar(v reflect.Value, tok []byte) bool {
	switch v.Kind() {
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
		v.SetString(string(s))
	case reflect.Bool:
		switch string(tok) {
		case "true":
			v.SetBool(true)
		case "false":
			v.SetBool(false)
		default:
			return false
		}
	case reflect.Int, reflect.Int8, reflect.Int16, reflect.Int32, reflect.Int64:
		n, err := strconv.ParseInt(string(tok), 10, v.Type().Bits())
		if err != nil || !plainInteger(tok) {
			return false
		}
		v.SetInt(n)
	case reflect.Uint, reflect.Uint8, reflect.Uint16, reflect.Uint32, reflect.Uint64:
		n, err := strconv.ParseUint(string(tok), 10, v.Type().Bits())
		if err != nil || !plainInteger(tok) {
			return false
		}
		v.SetUint(n)
	case reflect.Float32, reflect.Float64:
		if !plainInteger(tok) {
			return false // leave fractions and exponents to encoding/json
		}
		n, err := strconv.ParseFloat(string(tok), v.Type().Bits())
		if err != nil {
			return false
		}
		v.SetFloat(n)
	default:
		return false
	}
	return true
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

// appendScalar appends the JSON of a result of an integer or bool kind, as
// encoding/json would write it; ok is false for any other kind.
func appendScalar(b []byte, v reflect.Value) (_ []byte, ok bool) {
	switch v.Kind() {
	case reflect.Int, reflect.Int8, reflect.Int16, reflect.Int32, reflect.Int64:
		return strconv.AppendInt(b, v.Int(), 10), true
	case reflect.Uint, reflect.Uint8, reflect.Uint16, reflect.Uint32, reflect.Uint64:
		return strconv.AppendUint(b, v.Uint(), 10), true
	case reflect.Bool:
		return strconv.AppendBool(b, v.Bool()), true
	}
	return nil, false
}
