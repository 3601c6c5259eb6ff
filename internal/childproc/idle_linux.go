package childproc

import (
	"fmt"
	"runtime"
	"unsafe"

	"golang.org/x/sys/unix"
)

// IdleCPU moves the calling goroutine's thread to the idle scheduling class
// (SCHED_IDLE): from then on it runs only when no thread of the normal class
// wants its CPU, and a normal thread that wakes up takes the CPU from it at
// once. A child calls it for a call that has computed for long, so that
// short calls, of any user, and the worker itself do not wait behind it for
// a time slice (docs/RATIONALE.md, "Why do long calls drop to the idle
// class?").
//
// It locks the goroutine to its thread for good: an unprivileged thread
// cannot leave the idle class, so the caller must let the goroutine end
// without unlocking, and the runtime then ends the thread with it. The
// seccomp filter allows this one use of sched_setscheduler and no other.
func IdleCPU() error {
	runtime.LockOSThread()
	var param struct{ priority int32 }
	_, _, errno := unix.RawSyscall(unix.SYS_SCHED_SETSCHEDULER, 0, unix.SCHED_IDLE, uintptr(unsafe.Pointer(&param)))
	if errno != 0 {
		return fmt.Errorf("sched_setscheduler(SCHED_IDLE): %w", errno)
	}
	return nil
}
