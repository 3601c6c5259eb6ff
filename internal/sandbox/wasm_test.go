package sandbox

// A tiny WebAssembly encoder for the hand-written modules of the tests: what
// they need of the binary format and nothing more. The bodies are written as
// instruction bytes with the text format alongside.

const (
	i32 = 0x7f
	i64 = 0x7e
)

type wasmImport struct {
	module, name    string
	params, results []byte
}

type wasmFunc struct {
	export          string // "" to leave it unexported
	params, results []byte
	body            []byte // instructions, without locals and the final end
}

type wasmModule struct {
	imports     []wasmImport
	memoryPages int // 0: no memory
	funcs       []wasmFunc
	data        []dataSegment // active, in memory 0
}

func (m wasmModule) bytes() []byte {
	out := []byte("\x00asm\x01\x00\x00\x00")
	section := func(id byte, content []byte) {
		out = append(out, id)
		out = appendULEB(out, uint64(len(content)))
		out = append(out, content...)
	}
	name := func(b []byte, s string) []byte {
		return append(appendULEB(b, uint64(len(s))), s...)
	}
	var types []byte
	ntypes := 0
	addType := func(params, results []byte) uint64 {
		types = append(types, 0x60)
		types = appendULEB(types, uint64(len(params)))
		types = append(types, params...)
		types = appendULEB(types, uint64(len(results)))
		types = append(types, results...)
		ntypes++
		return uint64(ntypes - 1)
	}
	var imports []byte
	for _, im := range m.imports {
		imports = name(imports, im.module)
		imports = name(imports, im.name)
		imports = append(imports, 0x00)
		imports = appendULEB(imports, addType(im.params, im.results))
	}
	var funcs, exports, code []byte
	nexports := 0
	for i, f := range m.funcs {
		funcs = appendULEB(funcs, addType(f.params, f.results))
		if f.export != "" {
			exports = name(exports, f.export)
			exports = append(exports, 0x00)
			exports = appendULEB(exports, uint64(len(m.imports)+i))
			nexports++
		}
		body := append([]byte{0x00}, f.body...) // no locals
		body = append(body, 0x0b)
		code = appendULEB(code, uint64(len(body)))
		code = append(code, body...)
	}
	if m.memoryPages > 0 {
		exports = name(exports, "memory")
		exports = append(exports, 0x02, 0x00)
		nexports++
	}
	section(1, append(appendULEB(nil, uint64(ntypes)), types...))
	if len(m.imports) > 0 {
		section(2, append(appendULEB(nil, uint64(len(m.imports))), imports...))
	}
	section(3, append(appendULEB(nil, uint64(len(m.funcs))), funcs...))
	if m.memoryPages > 0 {
		section(5, appendULEB([]byte{0x01, 0x00}, uint64(m.memoryPages)))
	}
	section(7, append(appendULEB(nil, uint64(nexports)), exports...))
	section(10, append(appendULEB(nil, uint64(len(m.funcs))), code...))
	if len(m.data) > 0 {
		data := appendULEB(nil, uint64(len(m.data)))
		for _, d := range m.data {
			data = append(data, 0x00, opI32Const)
			data = appendS32(data, int32(d.offset))
			data = append(data, opEnd)
			data = appendULEB(data, uint64(len(d.init)))
			data = append(data, d.init...)
		}
		section(sectionData, data)
	}
	return out
}

func appendULEB(b []byte, v uint64) []byte {
	for {
		c := byte(v & 0x7f)
		v >>= 7
		if v != 0 {
			c |= 0x80
		}
		b = append(b, c)
		if v == 0 {
			return b
		}
	}
}

// Instruction bodies of the hand-written modules.
var (
	// (i32.const 0)
	bodyReturnZero = []byte{0x41, 0x00}
	// (loop (br 0)) (i32.const 0)
	bodySpin = []byte{0x03, 0x40, 0x0c, 0x00, 0x0b, 0x41, 0x00}
	// (call 0): the function is the module's first, calling itself forever.
	bodyRecurse = []byte{0x10, 0x00}
	// (loop (br_if 0 (i32.ne (memory.grow (i32.const 16)) (i32.const -1)))) unreachable
	bodyGrowForever = []byte{0x03, 0x40, 0x41, 0x10, 0x40, 0x00, 0x41, 0x7f, 0x47, 0x0d, 0x00, 0x0b, 0x00}
)
