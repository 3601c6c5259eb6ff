package childproc

import (
	"fmt"
	"time"
)

// Limits are one call's limits, the same for both runners: a deployed
// function's (docs/ABI.md), a Starlark call's, and what a Supervisor's
// exchange enforces. Zero fields take the runner's defaults (WithDefaults).
type Limits struct {
	// Timeout bounds the call's wall time. A child that overstays is
	// killed; in process, the code is stopped at its next check.
	Timeout time.Duration
	// Memory bounds the memory of the code running the call: a
	// WebAssembly instance's linear memory, a Starlark child's heap.
	Memory int64
	// MaxInput and MaxOutput bound the bytes of the call's input and
	// result.
	MaxInput  int
	MaxOutput int
}

// WithDefaults fills the zero fields of l from d.
func (l Limits) WithDefaults(d Limits) Limits {
	if l.Timeout == 0 {
		l.Timeout = d.Timeout
	}
	if l.Memory == 0 {
		l.Memory = d.Memory
	}
	if l.MaxInput == 0 {
		l.MaxInput = d.MaxInput
	}
	if l.MaxOutput == 0 {
		l.MaxOutput = d.MaxOutput
	}
	return l
}

// FormatBytes writes n in the largest binary unit that divides it, for
// messages: 64 MiB, 1536 KiB, 100 bytes.
func FormatBytes(n int64) string {
	switch {
	case n != 0 && n%GiB == 0:
		return fmt.Sprintf("%d GiB", n/GiB)
	case n != 0 && n%MiB == 0:
		return fmt.Sprintf("%d MiB", n/MiB)
	case n != 0 && n%KiB == 0:
		return fmt.Sprintf("%d KiB", n/KiB)
	}
	return fmt.Sprintf("%d bytes", n)
}
