//go:build !linux

package childproctest

import (
	"errors"
	"os"
	"syscall"
)

// denyAndExec execs argv: there is nothing to take away.
func denyAndExec(_ bool, argv []string) { syscall.Exec(argv[0], argv, os.Environ()) }

// NamespacesWork: there are no namespaces off Linux.
func NamespacesWork() error { return errors.New("no namespaces off Linux") }
