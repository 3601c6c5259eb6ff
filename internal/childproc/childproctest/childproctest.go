// Package childproctest starts the children of package childproc, in
// tests, under conditions a test machine does not otherwise have: a
// kernel that refuses seccomp filters. It changes nothing in the code
// under test: the child is the same binary, started through a wrapper
// that takes the capability away from it, as a kernel or a container
// would.
//
// A test binary whose children it wraps calls Main first in its TestMain.
//
// # Caveats
//
//   - Only Linux can take seccomp away; elsewhere WithoutSeccomp's child
//     has none anyway, and NamespacesWork reports that there are none.
package childproctest

import (
	"os"
)

// The arguments by which a test binary becomes a wrapper or a probe.
const (
	noSeccompArg = "__childproctest-no-seccomp"
	noUserNSArg  = "__childproctest-no-userns"
	exitArg      = "__childproctest-exit"
)

// Main makes the test binary a wrapper or a probe when WithoutSeccomp or
// NamespacesWork started it as one, and returns otherwise. Call it first
// in TestMain.
func Main() {
	if len(os.Args) < 2 {
		return
	}
	switch os.Args[1] {
	case exitArg:
		os.Exit(0)
	case noSeccompArg, noUserNSArg:
		if len(os.Args) < 3 {
			os.Exit(2)
		}
		denyAndExec(os.Args[1] == noUserNSArg, os.Args[2:]) // returns only on error
		os.Exit(2)
	}
}

// WithoutSeccomp returns a child's command (the test binary and its
// argument) that starts it where the seccomp system call fails with ENOSYS,
// as on a kernel without seccomp filters: the test binary first installs a
// filter on itself that refuses seccomp, which the exec'd child inherits.
func WithoutSeccomp(command []string) []string {
	return append([]string{command[0], noSeccompArg}, command...)
}

// WithoutUserNamespaces returns a child's command that starts it where new
// user namespaces are refused (EPERM), as where a sysctl or a security
// module forbids them.
func WithoutUserNamespaces(command []string) []string {
	return append([]string{command[0], noUserNSArg}, command...)
}
