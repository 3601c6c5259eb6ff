//go:build wasip1

package guest

import (
	"encoding/binary"
	"errors"
	"unsafe"
)

// The Extism kernel's functions (extism:host/env). Memory handles are
// offsets into the kernel's memory, not the guest's, so bytes are copied
// across eight at a time. Every call costs far more than the bytes it moves
// (go-sdk looks up a kernel export and wazero allocates a call stack for
// each of alloc, input_length, output_set, input_load_u8 and store_u8), so
// the code below makes as few as it can: input_load_u64 and store_u64 are
// served by the host directly and are cheap.

//go:wasmimport extism:host/env input_length
func extismInputLength() uint64

//go:wasmimport extism:host/env input_load_u64
func extismInputLoadU64(offset uint64) uint64

//go:wasmimport extism:host/env alloc
func extismAlloc(length uint64) uint64

//go:wasmimport extism:host/env store_u8
func extismStoreU8(offset uint64, value uint32)

//go:wasmimport extism:host/env store_u64
func extismStoreU64(offset uint64, value uint64)

//go:wasmimport extism:host/env output_set
func extismOutputSet(offset, length uint64)

//go:wasmimport extism:host/env error_set
func extismErrorSet(offset uint64)

//go:wasmimport extism:host/env length
func extismLength(offset uint64) uint64

//go:wasmimport extism:host/env load_u8
func extismLoadU8(offset uint64) uint32

//go:wasmimport extism:host/env free
func extismFree(offset uint64)

// The taskworker namespace (docs/ABI.md).

//go:wasmimport taskworker log
func taskworkerLog(level int32, msg uint64)

//go:wasmimport taskworker secret_get
func taskworkerSecretGet(name uint64) uint64

//go:wasmimport taskworker last_error
func taskworkerLastError() uint64

func readInput() []byte {
	n := extismInputLength()
	if n < 8 {
		// One word read past the end of a short input stays inside the
		// kernel's memory: the input is the first block allocated after
		// the kernel's reset, at the start of a memory of whole 64 KiB
		// pages.
		var word [8]byte
		if n > 0 {
			binary.LittleEndian.PutUint64(word[:], extismInputLoadU64(0))
		}
		return append([]byte(nil), word[:n]...)
	}
	buf := make([]byte, n)
	for i := uint64(0); i+8 <= n; i += 8 {
		binary.LittleEndian.PutUint64(buf[i:], extismInputLoadU64(i))
	}
	// The tail as one overlapping word.
	binary.LittleEndian.PutUint64(buf[n-8:], extismInputLoadU64(n-8))
	return buf
}

// store copies b into a new block of the kernel's memory and returns its
// handle. The block's length is len(b) if exact, else at least 8, for
// blocks whose length the host takes from elsewhere (output_set's).
func store(b []byte, exact bool) uint64 {
	n := uint64(len(b))
	switch {
	case n < 8 && exact:
		offset := extismAlloc(n)
		for i := range n {
			extismStoreU8(offset+i, uint32(b[i]))
		}
		return offset
	case n < 8:
		// One word in one store.
		var word [8]byte
		copy(word[:], b)
		offset := extismAlloc(8)
		extismStoreU64(offset, binary.LittleEndian.Uint64(word[:]))
		return offset
	}
	offset := extismAlloc(n)
	for i := uint64(0); i+8 <= n; i += 8 {
		extismStoreU64(offset+i, binary.LittleEndian.Uint64(b[i:]))
	}
	extismStoreU64(offset+n-8, binary.LittleEndian.Uint64(b[n-8:]))
	return offset
}

func setOutput(b []byte) {
	extismOutputSet(store(b, false), uint64(len(b)))
}

func setError(msg string) {
	extismErrorSet(store(unsafe.Slice(unsafe.StringData(msg), len(msg)), true))
}

func hostLog(level Level, msg string) {
	taskworkerLog(int32(level), store(unsafe.Slice(unsafe.StringData(msg), len(msg)), true))
}

// load copies the kernel's block h out and frees it. Blocks read this way
// are small (a secret, an error message): a byte at a time is enough.
func load(h uint64) []byte {
	b := make([]byte, extismLength(h))
	for i := range b {
		b[i] = byte(extismLoadU8(h + uint64(i)))
	}
	extismFree(h)
	return b
}

func secretGet(name string) ([]byte, error) {
	// The host frees the name's block.
	v := taskworkerSecretGet(store(unsafe.Slice(unsafe.StringData(name), len(name)), true))
	if v != 0 {
		return load(v), nil
	}
	if e := taskworkerLastError(); e != 0 {
		return nil, errors.New(string(load(e)))
	}
	return nil, errors.New("guest: secret_get failed and the host said nothing of why")
}
