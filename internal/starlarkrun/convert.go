package starlarkrun

import (
	"bytes"
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"math"
	"math/big"
	"strconv"
	"strings"
	"unicode/utf8"

	"go.starlark.net/starlark"

	"github.com/hivemind/taskworker/internal/names"
)

// JSON <-> Starlark values. JSON null, booleans, numbers, strings, arrays and
// objects become None, bool, int (of any size) or float, string, list and
// dict; the way back also takes tuples, and refuses what has no JSON form
// (sets, bytes, functions, dicts with non-string keys, NaN and infinities,
// values that contain themselves) with the path to the bad value.

// maxJSONDepth bounds the nesting of a result, which also stops a list that
// contains itself.
const maxJSONDepth = 1000

// decodeArgs turns a call's JSON arguments into Starlark arguments: an array
// is positional, an object is keyword arguments, empty or null is none.
func decodeArgs(data []byte) (starlark.Tuple, []starlark.Tuple, error) {
	data = bytes.TrimSpace(data)
	if len(data) == 0 || string(data) == "null" {
		return nil, nil, nil
	}
	if data[0] != '[' && data[0] != '{' {
		return nil, nil, errors.New("arguments must be a JSON array (positional) or a JSON object (keyword arguments)")
	}
	dec := newDecoder(data)
	if data[0] == '[' {
		v, err := dec.decode()
		if err != nil {
			return nil, nil, err
		}
		l := v.(*starlark.List)
		args := make(starlark.Tuple, l.Len())
		for i := range args {
			args[i] = l.Index(i)
		}
		return args, nil, nil
	}
	var kwargs []starlark.Tuple
	err := dec.object(func(k string, v starlark.Value) {
		kwargs = append(kwargs, starlark.Tuple{starlark.String(k), v})
	})
	if err == nil {
		err = dec.end()
	}
	return nil, kwargs, err
}

// jsonDecoder decodes JSON token by token, so objects keep their key order.
type jsonDecoder struct {
	dec *json.Decoder
}

func newDecoder(data []byte) *jsonDecoder {
	dec := json.NewDecoder(bytes.NewReader(data))
	dec.UseNumber()
	return &jsonDecoder{dec: dec}
}

// decode reads one complete value and checks nothing follows it.
func (d *jsonDecoder) decode() (starlark.Value, error) {
	v, err := d.value()
	if err != nil {
		return nil, err
	}
	return v, d.end()
}

func (d *jsonDecoder) end() error {
	if _, err := d.dec.Token(); err != io.EOF {
		return errors.New("invalid JSON: more data after the value")
	}
	return nil
}

func (d *jsonDecoder) value() (starlark.Value, error) {
	tok, err := d.dec.Token()
	if err != nil {
		return nil, jsonSyntaxError(err)
	}
	switch t := tok.(type) {
	case nil:
		return starlark.None, nil
	case bool:
		return starlark.Bool(t), nil
	case string:
		return starlark.String(t), nil
	case json.Number:
		return numberValue(string(t))
	case json.Delim:
		switch t {
		case '[':
			var elems []starlark.Value
			for d.dec.More() {
				v, err := d.value()
				if err != nil {
					return nil, err
				}
				elems = append(elems, v)
			}
			if _, err := d.dec.Token(); err != nil {
				return nil, jsonSyntaxError(err)
			}
			return starlark.NewList(elems), nil
		case '{':
			dict := starlark.NewDict(0)
			err := d.objectBody(func(k string, v starlark.Value) { dict.SetKey(starlark.String(k), v) })
			return dict, err
		}
	}
	return nil, fmt.Errorf("invalid JSON: unexpected %v", tok)
}

// object reads an object, calling set for each member in order.
func (d *jsonDecoder) object(set func(string, starlark.Value)) error {
	tok, err := d.dec.Token()
	if err != nil {
		return jsonSyntaxError(err)
	}
	if tok != json.Delim('{') {
		return fmt.Errorf("invalid JSON: want an object, got %v", tok)
	}
	return d.objectBody(set)
}

// objectBody reads an object's members after its '{'.
func (d *jsonDecoder) objectBody(set func(string, starlark.Value)) error {
	for d.dec.More() {
		tok, err := d.dec.Token()
		if err != nil {
			return jsonSyntaxError(err)
		}
		key, _ := tok.(string) // the decoder guarantees object keys are strings
		v, err := d.value()
		if err != nil {
			return err
		}
		set(key, v)
	}
	if _, err := d.dec.Token(); err != nil {
		return jsonSyntaxError(err)
	}
	return nil
}

func jsonSyntaxError(err error) error {
	if err == io.EOF {
		err = io.ErrUnexpectedEOF
	}
	return fmt.Errorf("invalid JSON: %w", err)
}

// numberValue makes an int of a JSON number without fraction or exponent,
// a float of any other.
func numberValue(s string) (starlark.Value, error) {
	if !strings.ContainsAny(s, ".eE") {
		if i, err := strconv.ParseInt(s, 10, 64); err == nil {
			return starlark.MakeInt64(i), nil
		}
		if b, ok := new(big.Int).SetString(s, 10); ok {
			return starlark.MakeBigInt(b), nil
		}
	}
	f, err := strconv.ParseFloat(s, 64)
	if err != nil {
		return nil, fmt.Errorf("number %.40s is out of range", s)
	}
	return starlark.Float(f), nil
}

// errResultTooLarge is returned by encodeJSON when the encoding outgrows
// its limit.
var errResultTooLarge = errors.New("result too large")

// encodeJSON encodes v as JSON, in at most max bytes. An error other than
// errResultTooLarge names the path to the value that has no JSON form.
func encodeJSON(v starlark.Value, max int) ([]byte, error) {
	e := jsonEncoder{max: max}
	if err := e.value(v, 0); err != nil {
		return nil, err
	}
	return e.buf, nil
}

type jsonEncoder struct {
	buf []byte
	max int
}

// pathError is a value with no JSON form, and where it is.
type pathError struct {
	path []string // innermost last, built on the way out
	msg  string
}

func (e *pathError) Error() string {
	var b strings.Builder
	b.WriteString("result")
	for i := len(e.path) - 1; i >= 0; i-- {
		if i == len(e.path)-9 && i > 0 {
			b.WriteString("...") // a long path: its start and its end
			i = 0
		}
		b.WriteString(e.path[i])
	}
	return b.String() + ": " + e.msg
}

func at(err error, seg string) error {
	if pe, ok := err.(*pathError); ok {
		pe.path = append(pe.path, seg)
	}
	return err
}

func (e *jsonEncoder) value(v starlark.Value, depth int) error {
	if depth > maxJSONDepth {
		return &pathError{msg: fmt.Sprintf("nested more than %d levels deep (or contains itself)", maxJSONDepth)}
	}
	switch v := v.(type) {
	case starlark.NoneType:
		e.buf = append(e.buf, "null"...)
	case starlark.Bool:
		e.buf = strconv.AppendBool(e.buf, bool(v))
	case starlark.Int:
		if i, ok := v.Int64(); ok {
			e.buf = strconv.AppendInt(e.buf, i, 10)
		} else {
			e.buf = v.BigInt().Append(e.buf, 10)
		}
	case starlark.Float:
		f := float64(v)
		if math.IsNaN(f) || math.IsInf(f, 0) {
			return &pathError{msg: fmt.Sprintf("%s has no JSON form", v)}
		}
		n := len(e.buf)
		e.buf = strconv.AppendFloat(e.buf, f, 'g', -1, 64)
		if !bytes.ContainsAny(e.buf[n:], ".e") {
			e.buf = append(e.buf, ".0"...)
		}
	case starlark.String:
		if len(e.buf)+len(v) > e.max {
			return errResultTooLarge
		}
		e.buf = appendJSONString(e.buf, string(v))
	case *starlark.List:
		return e.array(v, depth)
	case starlark.Tuple:
		return e.array(v, depth)
	case *starlark.Dict:
		e.buf = append(e.buf, '{')
		for i, kv := range v.Items() {
			k, ok := kv[0].(starlark.String)
			if !ok {
				return &pathError{msg: fmt.Sprintf("dict key %s is a %s; JSON object keys are strings", names.Truncate(kv[0].String(), 40), kv[0].Type())}
			}
			if i > 0 {
				e.buf = append(e.buf, ',')
			}
			e.buf = appendJSONString(e.buf, string(k))
			e.buf = append(e.buf, ':')
			if err := e.value(kv[1], depth+1); err != nil {
				return at(err, "["+names.Truncate(strconv.Quote(string(k)), 40)+"]")
			}
		}
		e.buf = append(e.buf, '}')
	default:
		return &pathError{msg: fmt.Sprintf("a %s has no JSON form; return None, a bool, number, string, list, tuple or dict with string keys", v.Type())}
	}
	if len(e.buf) > e.max {
		return errResultTooLarge
	}
	return nil
}

func (e *jsonEncoder) array(v starlark.Indexable, depth int) error {
	e.buf = append(e.buf, '[')
	for i := range v.Len() {
		if i > 0 {
			e.buf = append(e.buf, ',')
		}
		if err := e.value(v.Index(i), depth+1); err != nil {
			return at(err, "["+strconv.Itoa(i)+"]")
		}
	}
	e.buf = append(e.buf, ']')
	return nil
}

// appendJSONString appends s as a JSON string; bytes that are not UTF-8
// become U+FFFD, as encoding/json does.
func appendJSONString(buf []byte, s string) []byte {
	const hex = "0123456789abcdef"
	buf = append(buf, '"')
	for i := 0; i < len(s); {
		c := s[i]
		if c < utf8.RuneSelf {
			switch {
			case c == '"' || c == '\\':
				buf = append(buf, '\\', c)
			case c == '\n':
				buf = append(buf, '\\', 'n')
			case c == '\r':
				buf = append(buf, '\\', 'r')
			case c == '\t':
				buf = append(buf, '\\', 't')
			case c < 0x20:
				buf = append(buf, '\\', 'u', '0', '0', hex[c>>4], hex[c&0xF])
			default:
				buf = append(buf, c)
			}
			i++
			continue
		}
		r, size := utf8.DecodeRuneInString(s[i:])
		if r == utf8.RuneError && size == 1 {
			buf = append(buf, `\ufffd`...)
		} else {
			buf = append(buf, s[i:i+size]...)
		}
		i += size
	}
	return append(buf, '"')
}
