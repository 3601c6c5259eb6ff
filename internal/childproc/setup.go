package childproc

import (
	"os"
	"runtime"
)

// Attach is a child's first step, before anything else in its process uses
// stdin or stdout: it closes the descriptors it inherited without
// close-on-exec, moves the pipe protocol off file descriptor 1 (pointing
// fd 1 at stderr, so that nothing else that prints can corrupt the frames)
// and sets GOMAXPROCS to procs (explicitly, which also stops the runtime
// from re-reading cgroup files that the seccomp filter would refuse). It
// returns the protocol's output; the input is os.Stdin.
//
// Asked by Start to put the child in namespaces of its own, Attach does
// not return: this process starts the child again in them and exits with
// its exit code (enterNamespaces), and it is in the new process that
// Attach returns.
func Attach(procs int) (*os.File, error) {
	if os.Getenv(namespacesEnv) != "" {
		os.Exit(enterNamespaces())
	}
	if err := closeInherited(); err != nil {
		return nil, err
	}
	out, err := privateStdout()
	if err != nil {
		return nil, err
	}
	runtime.GOMAXPROCS(procs)
	return out, nil
}
