package shardstore

import (
	"os"

	"golang.org/x/sys/unix"
)

// syncfsFunc flushes the filesystem holding d with syncfs(2).
func syncfsFunc(d *os.File) func() error {
	return func() error {
		if err := unix.Syncfs(int(d.Fd())); err != nil {
			return &os.SyscallError{Syscall: "syncfs", Err: err}
		}
		return nil
	}
}
