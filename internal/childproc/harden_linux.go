//go:build linux

package childproc

import (
	"fmt"
	"os"
	"runtime"
	"runtime/debug"
	"strconv"
	"strings"
	"sync"
	"syscall"

	"golang.org/x/sys/unix"
)

// closeInherited closes the descriptors above stderr that the child
// inherited: os/exec passes only stdin, stdout and stderr on purpose, but a
// descriptor the worker itself inherited without close-on-exec (from a
// shell, a supervisor) goes through every exec. Those are exactly the ones
// without FD_CLOEXEC here: every descriptor the Go runtime opens has it.
func closeInherited() error {
	entries, err := os.ReadDir("/proc/self/fd")
	if err != nil {
		return err
	}
	for _, e := range entries {
		fd, err := strconv.Atoi(e.Name())
		if err != nil || fd <= 2 {
			continue
		}
		flags, err := unix.FcntlInt(uintptr(fd), unix.F_GETFD, 0)
		if err == nil && flags&unix.FD_CLOEXEC == 0 {
			unix.Close(fd)
		}
	}
	return nil
}

// privateStdout moves the pipe protocol off file descriptor 1 and points
// fd 1 at stderr, so nothing else in the binary that prints to stdout can
// corrupt the frames.
func privateStdout() (*os.File, error) {
	fd, err := unix.FcntlInt(1, unix.F_DUPFD_CLOEXEC, 3)
	if err != nil {
		return nil, fmt.Errorf("dup stdout: %w", err)
	}
	if err := unix.Dup3(2, 1, 0); err != nil {
		unix.Close(fd)
		return nil, fmt.Errorf("point stdout at stderr: %w", err)
	}
	return os.NewFile(uintptr(fd), "protocol"), nil
}

// LimitMemory caps the child's memory for a live-heap limit of limit bytes
// (docs/RATIONALE.md, Starlark, "How is memory bounded?"): a soft limit
// for the garbage collector a quarter above the limit, so it collects hard
// before the limit is reached, and a hard RLIMIT_AS over the address
// space the process has now, the soft limit, one 64 MiB heap arena (the
// unit in which Go reserves heap address space) and room for the runtime's
// metadata. It returns the virtual size before and the cap.
func LimitMemory(limit int64) (baseline, cap int64, err error) {
	soft := softMemoryLimit(limit)
	debug.SetMemoryLimit(soft)
	debug.SetMaxStack(int(min(limit, GiB)))
	prestartThreads(prestartedThreads)
	runtime.GC() // and the garbage collector's workers
	if baseline, err = virtualSize(); err != nil {
		return 0, 0, err
	}
	threads, err := threadStackSlack()
	if err != nil {
		return 0, 0, err
	}
	cap = baseline + soft + addressSpaceSlack + threads + raceAddressSpaceSlack
	for _, rl := range []struct {
		resource int
		value    uint64
	}{
		{unix.RLIMIT_AS, uint64(cap)},
		{unix.RLIMIT_CORE, 0},  // a crashed child leaves no core with its calls' data
		{unix.RLIMIT_FSIZE, 0}, // nor any file
	} {
		if err := unix.Setrlimit(rl.resource, &unix.Rlimit{Cur: rl.value, Max: rl.value}); err != nil {
			return 0, 0, fmt.Errorf("setrlimit %d: %w", rl.resource, err)
		}
	}
	return baseline, cap, nil
}

// prestartedThreads is how many threads a child starts before its
// baseline: more than a child uses (main, sysmon, one per P, one blocked
// reading the pipe, the template thread), measured in TestChildProcess.
const prestartedThreads = 8

// addressSpaceSlack is RLIMIT_AS over the baseline and the soft limit:
// one heap arena plus metadata, stacks and the arena the heap may be in
// the middle of. Measured: docs/RATIONALE.md, Starlark.
const addressSpaceSlack = 96 * MiB

// threadStackSlack is room in RLIMIT_AS for threads started after the
// baseline. A pure Go binary allocates thread stacks on its heap, but one
// linked with libc (cgo; the net package brings it in by default) has
// pthread_create map RLIMIT_STACK bytes per thread, and glibc's malloc
// reserve a 64 MiB arena for each new thread: allow two such threads more
// than prestartThreads made.
func threadStackSlack() (int64, error) {
	maps, err := os.ReadFile("/proc/self/maps")
	if err != nil {
		return 0, err
	}
	if !strings.Contains(string(maps), "/libc.so") && !strings.Contains(string(maps), "/libc-") {
		return 0, nil
	}
	var stack unix.Rlimit
	if err := unix.Getrlimit(unix.RLIMIT_STACK, &stack); err != nil {
		return 0, err
	}
	perThread := int64(8 * MiB)
	if stack.Cur != unix.RLIM_INFINITY {
		perThread = min(int64(stack.Cur), 64*MiB)
	}
	return 2 * (perThread + 64*MiB), nil
}

// prestartThreads makes the runtime start n threads now, so that they are
// in the baseline the address-space cap is measured from: n goroutines lock
// a thread each and wait together, then unlock, which leaves the threads
// idle for the runtime to reuse rather than start new ones.
func prestartThreads(n int) {
	var started sync.WaitGroup
	release := make(chan struct{})
	var done sync.WaitGroup
	for range n {
		started.Add(1)
		done.Go(func() {
			runtime.LockOSThread()
			started.Done()
			<-release
			runtime.UnlockOSThread()
		})
	}
	started.Wait()
	close(release)
	done.Wait()
}

// softMemoryLimit is the Go runtime's memory limit for a live-heap limit.
func softMemoryLimit(limit int64) int64 { return limit + limit/4 + 4*MiB }

// virtualSize is the process's virtual size in bytes, from /proc.
func virtualSize() (int64, error) {
	b, err := os.ReadFile("/proc/self/statm")
	if err != nil {
		return 0, err
	}
	var pages int64
	if _, err := fmt.Sscan(string(b), &pages); err != nil {
		return 0, fmt.Errorf("parse /proc/self/statm: %w", err)
	}
	return pages * int64(os.Getpagesize()), nil
}

// Harden is the last step of a child's start-up, before any code runs: it
// moves to /, sets no_new_privs on every thread and installs the seccomp
// filter. It returns what it did, for the parent's log.
//
// A child that cannot install the filter (no filter for this architecture,
// a kernel without seccomp, a container that forbids it) fails closed: it
// writes the cause to stderr and returns an error wrapping ErrUnconfined,
// after which it must exit with ExitUnconfined, which Start turns into an
// error that says what to do. With allowUnconfined (the operator's
// --allow-unconfined) it goes on without the filter and says so.
func Harden(allowUnconfined bool) (string, error) {
	done := []string{}
	if err := os.Chdir("/"); err == nil {
		done = append(done, "cwd=/")
	}
	// no_new_privs is per thread. AllThreadsSyscall sets it on all of them
	// but refuses in a binary with cgo (a test binary may have it); then it
	// is set on this thread, and the seccomp filter's TSYNC copies it to
	// the others.
	runtime.LockOSThread()
	defer runtime.UnlockOSThread()
	_, _, errno := syscall.AllThreadsSyscall(syscall.SYS_PRCTL, unix.PR_SET_NO_NEW_PRIVS, 1, 0)
	allThreads := errno == 0
	var err error = errno
	if errno == 0 {
		err = nil
	} else if errno == syscall.ENOTSUP {
		err = unix.Prctl(unix.PR_SET_NO_NEW_PRIVS, 1, 0, 0, 0)
	}
	if err != nil {
		return "", fmt.Errorf("prctl(PR_SET_NO_NEW_PRIVS): %w", err)
	}
	if err := installSeccomp(); err != nil {
		if !allowUnconfined {
			fmt.Fprintln(os.Stderr, err) // the cause, for Start's error
			return "", fmt.Errorf("%w: %w", ErrUnconfined, err)
		}
		if !allThreads {
			done = append(done, "no_new_privs(this thread)")
		} else {
			done = append(done, "no_new_privs")
		}
		done = append(done, unconfinedMark+" (no seccomp: "+err.Error()+")")
	} else {
		done = append(done, "no_new_privs", "seccomp")
	}
	return strings.Join(done, ","), nil
}
