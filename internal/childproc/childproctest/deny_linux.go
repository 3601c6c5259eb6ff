package childproctest

import (
	"fmt"
	"os"
	"os/exec"
	"runtime"
	"syscall"
	"unsafe"

	"golang.org/x/sys/unix"
)

// denyAndExec installs a filter that answers every seccomp call with ENOSYS
// (or, with userNS, every clone or unshare that asks for a user namespace
// with EPERM, and clone3 with ENOSYS, so that its flags are seen in clone's)
// and allows everything else, then execs argv: filters survive exec, and a
// later filter cannot undo an earlier one's answer.
func denyAndExec(userNS bool, argv []string) {
	runtime.LockOSThread()
	if err := unix.Prctl(unix.PR_SET_NO_NEW_PRIVS, 1, 0, 0, 0); err != nil {
		fmt.Fprintln(os.Stderr, "childproctest: no_new_privs:", err)
		return
	}
	const (
		load  = unix.BPF_LD | unix.BPF_W | unix.BPF_ABS
		jeq   = unix.BPF_JMP | unix.BPF_JEQ | unix.BPF_K
		jset  = unix.BPF_JMP | unix.BPF_JSET | unix.BPF_K
		ret   = unix.BPF_RET | unix.BPF_K
		allow = unix.SECCOMP_RET_ALLOW
		nosys = unix.SECCOMP_RET_ERRNO | uint32(unix.ENOSYS)
		eperm = unix.SECCOMP_RET_ERRNO | uint32(unix.EPERM)
	)
	prog := []unix.SockFilter{
		{Code: load, K: 0}, // the call's number
		{Code: jeq, K: unix.SYS_SECCOMP, Jt: 0, Jf: 1},
		{Code: ret, K: nosys},
		{Code: ret, K: allow},
	}
	if userNS {
		prog = []unix.SockFilter{
			{Code: load, K: 0},
			{Code: jeq, K: unix.SYS_CLONE3, Jt: 0, Jf: 1},
			{Code: ret, K: nosys},
			{Code: jeq, K: unix.SYS_CLONE, Jt: 1, Jf: 0},
			{Code: jeq, K: unix.SYS_UNSHARE, Jt: 0, Jf: 3},
			{Code: load, K: 16}, // args[0]: the flags of both
			{Code: jset, K: unix.CLONE_NEWUSER, Jt: 0, Jf: 1},
			{Code: ret, K: eperm},
			{Code: ret, K: allow},
		}
	}
	fprog := unix.SockFprog{Len: uint16(len(prog)), Filter: &prog[0]}
	_, _, errno := unix.Syscall(unix.SYS_SECCOMP, unix.SECCOMP_SET_MODE_FILTER, unix.SECCOMP_FILTER_FLAG_TSYNC,
		uintptr(unsafe.Pointer(&fprog)))
	if errno != 0 {
		fmt.Fprintln(os.Stderr, "childproctest: seccomp:", errno)
		return
	}
	err := syscall.Exec(argv[0], argv, os.Environ())
	fmt.Fprintln(os.Stderr, "childproctest: exec:", err)
}

// NamespacesWork reports whether this machine lets the test binary start a
// child in new user, mount and network namespaces, as childproc asks for:
// nil if it does, or why not. It tries on its own, so that a test of
// childproc's probe does not rely on that probe.
func NamespacesWork() error {
	exe, err := os.Executable()
	if err != nil {
		return err
	}
	cmd := exec.Command(exe, exitArg)
	cmd.SysProcAttr = &syscall.SysProcAttr{
		Cloneflags:  syscall.CLONE_NEWUSER | syscall.CLONE_NEWNS | syscall.CLONE_NEWNET,
		UidMappings: []syscall.SysProcIDMap{{ContainerID: os.Getuid(), HostID: os.Getuid(), Size: 1}},
		GidMappings: []syscall.SysProcIDMap{{ContainerID: os.Getgid(), HostID: os.Getgid(), Size: 1}},
	}
	if out, err := cmd.CombinedOutput(); err != nil {
		return fmt.Errorf("a child in new user, mount and network namespaces: %w %s", err, out)
	}
	return nil
}
