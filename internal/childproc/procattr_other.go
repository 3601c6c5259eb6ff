//go:build !linux

package childproc

import "syscall"

// procAttr has nothing to set off Linux (see Caveats in doc.go).
func procAttr() *syscall.SysProcAttr { return &syscall.SysProcAttr{} }

// namespacesPossible: there are no namespaces off Linux.
const namespacesPossible = false

// enterNamespaces is never called off Linux.
func enterNamespaces() int { return exitNoNamespaces }
