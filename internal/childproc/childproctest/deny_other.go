//go:build !linux

package childproctest

import (
	"errors"
	"os"
	"syscall"
)

// denySeccompAndExec execs argv: there is no seccomp to take away.
func denySeccompAndExec(argv []string) { syscall.Exec(argv[0], argv, os.Environ()) }

// NamespacesWork: there are no namespaces off Linux.
func NamespacesWork() error { return errors.New("no namespaces off Linux") }
