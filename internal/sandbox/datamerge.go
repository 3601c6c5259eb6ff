package sandbox

import (
	"bytes"
	"cmp"
	"errors"
	"slices"
)

// mergeDataSegments rewrites a module's data section so that runs of
// active data segments close to each other become one segment, the bytes
// between them zeros (which a fresh memory holds anyway). The module means
// the same after it: the same bytes land at the same offsets.
//
// Why: Go's linker writes a data segment for every run of non-zero bytes,
// tens of thousands of them for a small Go guest (38,618 in go-add), and
// wazero evaluates each segment's offset expression and copies it at every
// instantiation: 2.5 ms of a Go guest's cold call. Merged, they are a few
// hundred (docs/RATIONALE.md, "What does a call cost").
//
// It rewrites only what it can prove equivalent: every segment active in
// memory 0 at an i32.const offset, no two overlapping, and
// no data count section (whose presence allows memory.init and data.drop,
// which name segments by index). Anything else, including bytes that do not
// parse, is returned as it is, for the compiler to judge.
func mergeDataSegments(wasm []byte) []byte {
	out, err := mergeData(wasm)
	if err != nil {
		return wasm
	}
	return out
}

// mergeGap is the largest run of zeros a merged segment spells out.
const mergeGap = 1 * KiB

const (
	sectionData      = 11
	sectionDataCount = 12
	opI32Const       = 0x41
	opEnd            = 0x0b
)

var errNoMerge = errors.New("data section left as it is")

type dataSegment struct {
	offset uint32
	init   []byte
}

func mergeData(wasm []byte) ([]byte, error) {
	dataStart, dataEnd, segs, err := dataSection(wasm)
	if err != nil {
		return nil, err
	}
	if len(segs) < 2 {
		return nil, errNoMerge
	}
	// Segments that do not overlap write disjoint bytes, so their order
	// does not matter: sort them (Go's linker writes each of its sections'
	// segments in order, the sections not), and refuse any overlap, where
	// order does matter.
	segs = slices.Clone(segs)
	slices.SortStableFunc(segs, func(a, b dataSegment) int { return cmp.Compare(a.offset, b.offset) })
	// Groups of segments no more than mergeGap apart become one segment,
	// written into a buffer of the group's span (zeros between).
	// The zeros written out are bounded by the module's own size, so that
	// a small module of many empty segments cannot make this allocate
	// gigabytes.
	var merged []dataSegment
	fill := uint64(len(wasm))
	for i := 0; i < len(segs); {
		j, end := i+1, uint64(segs[i].offset)+uint64(len(segs[i].init))
		for ; j < len(segs); j++ {
			if uint64(segs[j].offset) < end {
				return nil, errNoMerge // overlapping: order matters
			}
			gap := uint64(segs[j].offset) - end
			if gap > mergeGap || gap > fill {
				break
			}
			fill -= gap
			end = uint64(segs[j].offset) + uint64(len(segs[j].init))
		}
		if j == i+1 {
			merged = append(merged, segs[i])
		} else {
			buf := make([]byte, end-uint64(segs[i].offset))
			for _, s := range segs[i:j] {
				copy(buf[s.offset-segs[i].offset:], s.init)
			}
			merged = append(merged, dataSegment{offset: segs[i].offset, init: buf})
		}
		i = j
	}
	if len(merged) == len(segs) {
		return nil, errNoMerge
	}
	var section []byte
	section = appendU32(section, uint32(len(merged)))
	for _, s := range merged {
		section = append(section, 0, opI32Const)
		section = appendS32(section, int32(s.offset))
		section = append(section, opEnd)
		section = appendU32(section, uint32(len(s.init)))
		section = append(section, s.init...)
	}
	var out bytes.Buffer
	out.Grow(len(wasm))
	out.Write(wasm[:dataStart])
	out.WriteByte(sectionData)
	out.Write(appendU32(nil, uint32(len(section))))
	out.Write(section)
	out.Write(wasm[dataEnd:])
	return out.Bytes(), nil
}

// dataSection finds the data section (from its id byte to its end) and
// reads its segments. It fails where mergeDataSegments must not merge.
func dataSection(wasm []byte) (start, end int, segs []dataSegment, err error) {
	if len(wasm) < 8 {
		return 0, 0, nil, errNoMerge
	}
	for i := 8; i < len(wasm); {
		sectionStart := i
		id := wasm[i]
		size, n := readU32(wasm[i+1:])
		if n == 0 || uint64(i+1+n)+uint64(size) > uint64(len(wasm)) {
			return 0, 0, nil, errNoMerge
		}
		payload := wasm[i+1+n : i+1+n+int(size)]
		i += 1 + n + int(size)
		switch id {
		case sectionDataCount:
			return 0, 0, nil, errNoMerge
		case sectionData:
			if segs != nil {
				return 0, 0, nil, errNoMerge
			}
			if segs, err = parseDataSegments(payload); err != nil {
				return 0, 0, nil, err
			}
			start, end = sectionStart, i
		}
	}
	return start, end, segs, nil
}

// parseDataSegments reads a data section of active segments of memory 0 at
// constant offsets, and fails on anything else.
func parseDataSegments(p []byte) ([]dataSegment, error) {
	count, n := readU32(p)
	if n == 0 {
		return nil, errNoMerge
	}
	p = p[n:]
	segs := make([]dataSegment, 0, min(int(count), len(p)))
	for range count {
		if len(p) < 2 || p[0] != 0 || p[1] != opI32Const {
			return nil, errNoMerge
		}
		off, n := readS32(p[2:])
		if n == 0 {
			return nil, errNoMerge
		}
		p = p[2+n:]
		if len(p) == 0 || p[0] != opEnd {
			return nil, errNoMerge
		}
		size, n := readU32(p[1:])
		if n == 0 || uint64(1+n)+uint64(size) > uint64(len(p)) {
			return nil, errNoMerge
		}
		segs = append(segs, dataSegment{offset: uint32(off), init: p[1+n : 1+n+int(size)]})
		p = p[1+n+int(size):]
	}
	if len(p) != 0 {
		return nil, errNoMerge
	}
	return segs, nil
}

// readU32 reads an unsigned LEB128 of at most 5 bytes; n is 0 if there is
// none.
func readU32(p []byte) (v uint32, n int) {
	var shift uint
	for i := 0; i < len(p) && i < 5; i++ {
		if i == 4 && p[i]&0xf0 != 0 {
			return 0, 0 // bits past 32, or a sixth byte: not a u32
		}
		v |= uint32(p[i]&0x7f) << shift
		if p[i] < 0x80 {
			return v, i + 1
		}
		shift += 7
	}
	return 0, 0
}

// readS32 reads a signed LEB128 of at most 5 bytes (an i32.const
// immediate); n is 0 if there is none.
func readS32(p []byte) (v int32, n int) {
	var r int64
	var shift uint
	for i := 0; i < len(p) && i < 5; i++ {
		if i == 4 && p[i]&0x78 != 0 && p[i]&0x78 != 0x78 {
			return 0, 0 // bits past 32 that do not extend the sign: not an s32
		}
		r |= int64(p[i]&0x7f) << shift
		shift += 7
		if p[i] < 0x80 {
			if p[i]&0x40 != 0 {
				r |= -1 << shift // sign-extend
			}
			if r < -1<<31 || r >= 1<<31 {
				return 0, 0
			}
			return int32(r), i + 1
		}
	}
	return 0, 0
}

// appendU32 appends v as an unsigned LEB128.
func appendU32(b []byte, v uint32) []byte {
	for v >= 0x80 {
		b = append(b, byte(v)|0x80)
		v >>= 7
	}
	return append(b, byte(v))
}

// appendS32 appends v as a signed LEB128.
func appendS32(b []byte, v int32) []byte {
	x := int64(v)
	for {
		c := byte(x & 0x7f)
		x >>= 7
		if x == 0 && c&0x40 == 0 || x == -1 && c&0x40 != 0 {
			return append(b, c)
		}
		b = append(b, c|0x80)
	}
}
