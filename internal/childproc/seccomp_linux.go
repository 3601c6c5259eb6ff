//go:build linux && (amd64 || arm64)

package childproc

import (
	"fmt"
	"os"
	"unsafe"

	"golang.org/x/sys/unix"
)

// The seccomp filter a child installs on all its threads once it is set up
// (docs/RATIONALE.md, Starlark, "What does a child's process boundary
// hold?"). It allows the system calls the Go runtime makes in steady state
// and the pipe I/O, and answers every other one with EPERM: no open, no
// socket, no exec, no fork, no ptrace, no setrlimit. Narrowed further:
// mmap and mprotect without PROT_EXEC, clone only for threads, kill and
// tgkill only of the child itself, sched_setscheduler only to move the
// calling thread to the idle class (IdleCPU); clone3, whose flags a filter cannot
// read, answers ENOSYS so that glibc falls back to clone. A call from
// another ABI (x32, i386, 32-bit ARM) kills the process.
//
// The policy is one; its system call numbers are each architecture's:
// seccompArch, in seccomp_linux_amd64.go and seccomp_linux_arm64.go.

// seccompArch is what the filter needs to know of an architecture.
type seccompArch struct {
	audit uint32 // AUDIT_ARCH_* of the native ABI
	// x32 says that numbers with bit 30 set are another ABI's (amd64's
	// x32), refused whatever their low bits.
	x32 bool
	// allowed may be called with any arguments.
	allowed []uint32
	// The calls allowed with some arguments only.
	mmap, mprotect, clone, clone3, kill, tgkill, schedSetscheduler uint32
	// prlimit64, when not 0, is allowed to read limits only (new_limit
	// NULL): glibc's getrlimit is prlimit64 where there is no getrlimit.
	prlimit64 uint32
}

// seccomp_data offsets (linux/seccomp.h), little-endian.
const (
	offNr   = 0
	offArch = 4
	offArg0 = 16 // args[i] at offArg0 + 8*i; the high half 4 bytes later
)

func installSeccomp() error {
	prog, err := seccompFilter(thisArch, uint32(os.Getpid()))
	if err != nil {
		return err
	}
	fprog := unix.SockFprog{Len: uint16(len(prog)), Filter: &prog[0]}
	// TSYNC applies the filter (and no_new_privs) to every thread of the
	// process; threads started later inherit it.
	r, _, errno := unix.Syscall(unix.SYS_SECCOMP, unix.SECCOMP_SET_MODE_FILTER, unix.SECCOMP_FILTER_FLAG_TSYNC,
		uintptr(unsafe.Pointer(&fprog)))
	if errno != 0 {
		return fmt.Errorf("seccomp(SET_MODE_FILTER): %w", errno)
	}
	if r != 0 {
		return fmt.Errorf("seccomp(SET_MODE_FILTER): thread %d could not be synchronized", r)
	}
	return nil
}

// seccompFilter assembles the filter of arch for a process whose id is pid.
func seccompFilter(arch seccompArch, pid uint32) ([]unix.SockFilter, error) {
	const deny = unix.SECCOMP_RET_ERRNO | uint32(unix.EPERM)
	var a bpfAssembler
	a.load(offArch)
	a.jumpIf(arch.audit, "", "kill")
	a.load(offNr)
	if arch.x32 {
		a.jumpSet(0x40000000, "deny", "") // the x32 ABI's numbers
	}
	for _, nr := range arch.allowed {
		a.jumpIf(nr, "allow", "")
	}
	a.jumpIf(arch.mmap, "noexec", "")
	a.jumpIf(arch.mprotect, "noexec", "")
	a.jumpIf(arch.clone, "thread", "")
	a.jumpIf(arch.kill, "self", "")
	a.jumpIf(arch.tgkill, "self", "")
	a.jumpIf(arch.schedSetscheduler, "idle", "")
	a.jumpIf(arch.clone3, "nosys", "") // its flags are out of reach: make glibc fall back to clone
	if arch.prlimit64 != 0 {
		a.jumpIf(arch.prlimit64, "readlimit", "")
	}
	a.ret(deny)
	a.label("nosys")
	a.ret(unix.SECCOMP_RET_ERRNO | uint32(unix.ENOSYS))
	a.label("noexec") // mmap and mprotect: prot is args[2]
	a.load(offArg0 + 8*2)
	a.jumpSet(unix.PROT_EXEC, "deny", "allow")
	a.label("thread") // clone: flags are args[0] on both architectures
	a.load(offArg0)
	a.jumpSet(unix.CLONE_THREAD, "allow", "deny")
	a.label("self") // kill(pid, sig), tgkill(pid, tid, sig)
	a.load(offArg0)
	a.jumpIf(pid, "", "deny")
	a.load(offArg0 + 4)
	a.jumpIf(0, "allow", "deny")
	a.label("idle") // sched_setscheduler(0, SCHED_IDLE, param): the calling thread, to the idle class only (IdleCPU)
	a.load(offArg0)
	a.jumpIf(0, "", "deny")
	a.load(offArg0 + 4)
	a.jumpIf(0, "", "deny")
	a.load(offArg0 + 8) // policy is an int: the kernel reads the low half only
	a.jumpIf(unix.SCHED_IDLE, "allow", "deny")
	if arch.prlimit64 != 0 {
		a.label("readlimit") // prlimit64(pid, resource, new_limit, old_limit): new_limit NULL
		a.load(offArg0 + 8*2)
		a.jumpIf(0, "", "deny")
		a.load(offArg0 + 8*2 + 4)
		a.jumpIf(0, "allow", "deny")
	}
	// Jumps go forward only: the returns come last.
	a.label("deny")
	a.ret(deny)
	a.label("allow")
	a.ret(unix.SECCOMP_RET_ALLOW)
	a.label("kill")
	a.ret(unix.SECCOMP_RET_KILL_PROCESS)
	return a.assemble()
}

// bpfAssembler builds a classic BPF program with symbolic jump targets.
type bpfAssembler struct {
	prog   []unix.SockFilter
	jumps  []bpfJump
	labels map[string]int
}

type bpfJump struct {
	at     int
	jt, jf string // "" is the next instruction
}

func (a *bpfAssembler) load(off uint32) {
	a.prog = append(a.prog, unix.SockFilter{Code: unix.BPF_LD | unix.BPF_W | unix.BPF_ABS, K: off})
}

func (a *bpfAssembler) ret(v uint32) {
	a.prog = append(a.prog, unix.SockFilter{Code: unix.BPF_RET | unix.BPF_K, K: v})
}

// jumpIf jumps to jt when the accumulator equals k, else to jf.
func (a *bpfAssembler) jumpIf(k uint32, jt, jf string) { a.jump(unix.BPF_JEQ, k, jt, jf) }

// jumpSet jumps to jt when the accumulator has any bit of k, else to jf.
func (a *bpfAssembler) jumpSet(k uint32, jt, jf string) { a.jump(unix.BPF_JSET, k, jt, jf) }

func (a *bpfAssembler) jump(op uint16, k uint32, jt, jf string) {
	a.jumps = append(a.jumps, bpfJump{at: len(a.prog), jt: jt, jf: jf})
	a.prog = append(a.prog, unix.SockFilter{Code: unix.BPF_JMP | op | unix.BPF_K, K: k})
}

func (a *bpfAssembler) label(name string) {
	if a.labels == nil {
		a.labels = map[string]int{}
	}
	a.labels[name] = len(a.prog)
}

// assemble resolves the jump targets: classic BPF jumps forward only, by
// at most 255 instructions.
func (a *bpfAssembler) assemble() ([]unix.SockFilter, error) {
	offset := func(from int, target string) (uint8, error) {
		if target == "" {
			return 0, nil
		}
		to, ok := a.labels[target]
		if !ok {
			return 0, fmt.Errorf("bpf: no label %q", target)
		}
		d := to - from - 1
		if d < 0 || d > 255 {
			return 0, fmt.Errorf("bpf: jump from %d to %q (%d) out of range", from, target, to)
		}
		return uint8(d), nil
	}
	for _, j := range a.jumps {
		var err error
		if a.prog[j.at].Jt, err = offset(j.at, j.jt); err != nil {
			return nil, err
		}
		if a.prog[j.at].Jf, err = offset(j.at, j.jf); err != nil {
			return nil, err
		}
	}
	return a.prog, nil
}
