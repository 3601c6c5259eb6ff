package sandbox

import (
	"sync/atomic"

	"github.com/tetratelabs/wazero/experimental"
)

// memoryBudget is the linear memory allowance of one instance, shared by all
// its memories (the module's and the Extism kernel's). It is the wazero
// memory allocator of the instance's modules, so it sees every memory.grow
// and can refuse one and remember that it did: wazero's own page limit
// refuses silently, and then a guest's out-of-memory crash could not be told
// from any other. See docs/RATIONALE.md, "Why a memory allocator?".
type memoryBudget struct {
	limit   uint64
	used    atomic.Uint64
	refused atomic.Bool // a grow was refused: the instance outgrew its limit
}

var _ experimental.MemoryAllocator = (*memoryBudget)(nil)

func newMemoryBudget(limit int64) *memoryBudget {
	return &memoryBudget{limit: uint64(limit)}
}

// Allocate implements experimental.MemoryAllocator.
func (b *memoryBudget) Allocate(_, max uint64) experimental.LinearMemory {
	return &linearMemory{budget: b, max: max}
}

// linearMemory is one memory of an instance: a byte slice that grows, within
// the budget, as the guest asks.
type linearMemory struct {
	budget *memoryBudget
	buf    []byte
	max    uint64
}

// Reallocate implements experimental.LinearMemory. It returns nil, which the
// guest sees as memory.grow returning -1, when the grow would take the
// instance over its budget. The first allocation (the module's declared
// minimum) is never refused, since wazero cannot fail it gracefully; the
// budget is marked instead and Load rejects the module.
func (m *linearMemory) Reallocate(size uint64) []byte {
	cur := uint64(len(m.buf))
	if size <= cur {
		return m.buf[:size]
	}
	grow := size - cur
	used := m.budget.used.Add(grow)
	if used > m.budget.limit {
		m.budget.refused.Store(true)
		if cur > 0 {
			m.budget.used.Add(-grow)
			return nil
		}
	}
	if size <= uint64(cap(m.buf)) {
		m.buf = m.buf[:size]
		return m.buf
	}
	// Grow the capacity geometrically, as append would, but never past
	// what this memory and the budget could ever use.
	capacity := max(size, 2*uint64(cap(m.buf)))
	capacity = min(capacity, m.max)
	if used <= m.budget.limit {
		capacity = min(capacity, size+m.budget.limit-used)
	}
	capacity = max(capacity, size)
	buf := make([]byte, size, capacity)
	copy(buf, m.buf)
	m.buf = buf
	return m.buf
}

// Free implements experimental.LinearMemory.
func (m *linearMemory) Free() {
	m.budget.used.Add(-uint64(len(m.buf)))
	m.buf = nil
}
