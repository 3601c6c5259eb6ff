//go:build !linux

package childproc

import (
	"errors"
	"runtime"
)

// IdleCPU locks the goroutine to its thread, as on Linux, and reports that
// this system has no idle scheduling class.
func IdleCPU() error {
	runtime.LockOSThread()
	return errors.ErrUnsupported
}
