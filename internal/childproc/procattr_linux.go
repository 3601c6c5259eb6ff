package childproc

import "syscall"

// ProcAttr puts a child in a process group of its own, so a signal to
// the worker's group (Ctrl-C) does not reach it before the worker decides,
// and has the kernel kill it if the worker dies.
func ProcAttr() *syscall.SysProcAttr {
	return &syscall.SysProcAttr{Setpgid: true, Pdeathsig: syscall.SIGKILL}
}
