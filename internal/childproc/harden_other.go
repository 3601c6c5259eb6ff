//go:build !linux

package childproc

import (
	"fmt"
	"os"
	"runtime/debug"
)

// closeInherited does nothing off Linux (see Caveats in doc.go).
func closeInherited() error { return nil }

// privateStdout returns stdout: only Linux children move it.
func privateStdout() (*os.File, error) { return os.Stdout, nil }

// LimitMemory sets only the garbage collector's soft limit: there is no
// RLIMIT_AS here, so the live-heap check is the only bound.
func LimitMemory(limit int64) (baseline, cap int64, err error) {
	debug.SetMemoryLimit(softMemoryLimit(limit))
	debug.SetMaxStack(int(min(limit, GiB)))
	return 0, 0, nil
}

// softMemoryLimit is the Go runtime's memory limit for a live-heap limit.
func softMemoryLimit(limit int64) int64 { return limit + limit/4 + 4*MiB }

// Harden has no seccomp filter to install off Linux (see Caveats in
// doc.go): it refuses unless allowUnconfined, as a Linux child without its
// filter does.
func Harden(allowUnconfined bool) (string, error) {
	if !allowUnconfined {
		fmt.Fprintln(os.Stderr, "no seccomp filter off Linux")
		return "", fmt.Errorf("%w: not Linux", ErrUnconfined)
	}
	return unconfinedMark + " (not Linux)", nil
}
