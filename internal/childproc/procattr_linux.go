package childproc

import (
	"fmt"
	"os"
	"os/exec"
	"os/signal"
	"runtime"
	"syscall"

	"golang.org/x/sys/unix"
)

// procAttr puts a child in a process group of its own, so a signal to the
// worker's group (Ctrl-C) does not reach it before the worker decides, and
// has the kernel kill it if the worker dies.
func procAttr() *syscall.SysProcAttr {
	return &syscall.SysProcAttr{Setpgid: true, Pdeathsig: syscall.SIGKILL}
}

// namespacesPossible reports whether this system has the namespaces a
// child may be put in; whether they may be used is known only by trying.
const namespacesPossible = true

// enterNamespaces runs the child again in new user, mount and network
// namespaces (the second layer, under the seccomp filter: docs/RATIONALE.md,
// "Why namespaces under the seccomp filter?"), with the same arguments,
// standard descriptors and an empty environment, waits for it and returns
// its exit code. The only ids in its user namespace are the worker's own,
// mapped to themselves; its network namespace has no interface but a
// loopback that is down.
//
// The namespaces are made here, by a process that has just started, and
// not by the worker: a start with CLONE_NEWUSER is a fork, not a vfork, and
// a fork copies the page tables of the whole worker (measured: hundreds of
// milliseconds for a worker of 1 GiB). This process stays, as the new
// one's parent, until it exits; it dies with the worker (Pdeathsig) and
// the new one with it. If the namespaces are refused it exits with
// exitNoNamespaces, and Start starts the child again without them.
func enterNamespaces() int {
	exe, err := os.Executable()
	if err != nil {
		fmt.Fprintln(os.Stderr, "namespaces:", err)
		return exitNoNamespaces
	}
	// Pdeathsig follows the thread that starts the child: keep it.
	runtime.LockOSThread()
	cmd := &exec.Cmd{
		Path:   exe,
		Args:   os.Args,
		Env:    []string{},
		Dir:    "/",
		Stdin:  os.Stdin,
		Stdout: os.Stdout,
		Stderr: os.Stderr,
		SysProcAttr: &syscall.SysProcAttr{
			Pdeathsig:   syscall.SIGKILL,
			Cloneflags:  syscall.CLONE_NEWUSER | syscall.CLONE_NEWNS | syscall.CLONE_NEWNET,
			UidMappings: []syscall.SysProcIDMap{{ContainerID: os.Getuid(), HostID: os.Getuid(), Size: 1}},
			GidMappings: []syscall.SysProcIDMap{{ContainerID: os.Getgid(), HostID: os.Getgid(), Size: 1}},
			// setgroups is denied in the namespace (the default): a process
			// without privilege may map its ids only if it cannot drop groups.
		},
	}
	if err := cmd.Start(); err != nil {
		fmt.Fprintln(os.Stderr, "namespaces:", err)
		return exitNoNamespaces
	}
	cmd.Wait()
	ws, _ := cmd.ProcessState.Sys().(syscall.WaitStatus)
	if ws.Signaled() {
		// Die the same way, so that the worker reads the same end.
		unix.Setrlimit(unix.RLIMIT_CORE, &unix.Rlimit{})
		signal.Reset(ws.Signal())
		syscall.Kill(os.Getpid(), ws.Signal())
		return 128 + int(ws.Signal())
	}
	return ws.ExitStatus()
}
