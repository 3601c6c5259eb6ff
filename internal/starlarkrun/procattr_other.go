//go:build !linux

package starlarkrun

import "syscall"

// childProcAttr has nothing to set off Linux (see Caveats in doc.go).
func childProcAttr() *syscall.SysProcAttr { return &syscall.SysProcAttr{} }
