//go:build !linux

package childproc

import "syscall"

// ProcAttr has nothing to set off Linux (see Caveats in doc.go).
func ProcAttr() *syscall.SysProcAttr { return &syscall.SysProcAttr{} }
