//go:build linux && (amd64 || arm64)

package childproc

import (
	"encoding/binary"
	"runtime"
	"testing"

	"golang.org/x/sys/unix"
)

// runFilter runs a classic BPF program, of the instructions the filter
// uses, on one seccomp_data, and returns its verdict: what the kernel
// would, without installing it (TestHardening installs the real one).
func runFilter(t *testing.T, prog []unix.SockFilter, arch uint32, nr int, args ...uint64) uint32 {
	t.Helper()
	data := make([]byte, 64) // struct seccomp_data, little-endian
	binary.LittleEndian.PutUint32(data[offNr:], uint32(nr))
	binary.LittleEndian.PutUint32(data[offArch:], arch)
	for i, a := range args {
		binary.LittleEndian.PutUint64(data[offArg0+8*i:], a)
	}
	var acc uint32
	for pc := 0; pc < len(prog); pc++ {
		in := prog[pc]
		switch in.Code {
		case unix.BPF_LD | unix.BPF_W | unix.BPF_ABS:
			acc = binary.LittleEndian.Uint32(data[in.K:])
		case unix.BPF_JMP | unix.BPF_JEQ | unix.BPF_K:
			if acc == in.K {
				pc += int(in.Jt)
			} else {
				pc += int(in.Jf)
			}
		case unix.BPF_JMP | unix.BPF_JSET | unix.BPF_K:
			if acc&in.K != 0 {
				pc += int(in.Jt)
			} else {
				pc += int(in.Jf)
			}
		case unix.BPF_RET | unix.BPF_K:
			return in.K
		default:
			t.Fatalf("instruction %d: unexpected code %#x", pc, in.Code)
		}
	}
	t.Fatal("the program ran off its end")
	return 0
}

// TestSeccompFilter checks the filter's verdicts, call by call, for this
// architecture's table and for it with prlimit64 read-only (what arm64's
// has), so that the policy's branches are checked on either machine.
func TestSeccompFilter(t *testing.T) {
	const (
		pid   = 4242
		allow = unix.SECCOMP_RET_ALLOW
		eperm = unix.SECCOMP_RET_ERRNO | uint32(unix.EPERM)
		nosys = unix.SECCOMP_RET_ERRNO | uint32(unix.ENOSYS)
		kill  = unix.SECCOMP_RET_KILL_PROCESS
	)
	withPrlimit := thisArch
	withPrlimit.prlimit64 = unix.SYS_PRLIMIT64
	for _, arch := range []struct {
		name string
		seccompArch
	}{{runtime.GOARCH, thisArch}, {runtime.GOARCH + "+prlimit64", withPrlimit}} {
		t.Run(arch.name, func(t *testing.T) {
			prog, err := seccompFilter(arch.seccompArch, pid)
			if err != nil {
				t.Fatal(err)
			}
			a := arch.audit
			prlimitRead, prlimitWrite := uint32(eperm), uint32(eperm)
			if arch.prlimit64 != 0 {
				prlimitRead = allow
			}
			for _, tc := range []struct {
				name string
				arch uint32
				nr   int
				args []uint64
				want uint32
			}{
				{"read", a, unix.SYS_READ, nil, allow},
				{"openat", a, unix.SYS_OPENAT, nil, eperm},
				{"socket", a, unix.SYS_SOCKET, nil, eperm},
				{"execve", a, unix.SYS_EXECVE, nil, eperm},
				{"setrlimit", a, unix.SYS_SETRLIMIT, nil, eperm},
				{"unshare", a, unix.SYS_UNSHARE, nil, eperm},
				{"mmap", a, unix.SYS_MMAP, []uint64{0, 4096, unix.PROT_READ | unix.PROT_WRITE}, allow},
				{"mmap exec", a, unix.SYS_MMAP, []uint64{0, 4096, unix.PROT_READ | unix.PROT_EXEC}, eperm},
				{"mprotect exec", a, unix.SYS_MPROTECT, []uint64{0, 4096, unix.PROT_EXEC}, eperm},
				{"clone thread", a, unix.SYS_CLONE, []uint64{unix.CLONE_VM | unix.CLONE_THREAD}, allow},
				{"clone process", a, unix.SYS_CLONE, []uint64{uint64(unix.SIGCHLD)}, eperm},
				{"clone3", a, unix.SYS_CLONE3, nil, nosys},
				{"kill self", a, unix.SYS_KILL, []uint64{pid, 0}, allow},
				{"kill other", a, unix.SYS_KILL, []uint64{pid + 1, 9}, eperm},
				{"kill self in the high half", a, unix.SYS_KILL, []uint64{1<<32 | pid, 9}, eperm},
				{"tgkill other", a, unix.SYS_TGKILL, []uint64{1, 1, 9}, eperm},
				{"this thread to the idle class", a, unix.SYS_SCHED_SETSCHEDULER, []uint64{0, unix.SCHED_IDLE, 0x1000}, allow},
				{"another thread to the idle class", a, unix.SYS_SCHED_SETSCHEDULER, []uint64{pid, unix.SCHED_IDLE, 0x1000}, eperm},
				{"another thread, high half", a, unix.SYS_SCHED_SETSCHEDULER, []uint64{1 << 32, unix.SCHED_IDLE, 0x1000}, eperm},
				{"this thread to a real-time class", a, unix.SYS_SCHED_SETSCHEDULER, []uint64{0, unix.SCHED_FIFO, 0x1000}, eperm},
				{"this thread to the normal class", a, unix.SYS_SCHED_SETSCHEDULER, []uint64{0, unix.SCHED_NORMAL, 0x1000}, eperm},
				{"sched_setattr", a, unix.SYS_SCHED_SETATTR, []uint64{0, 0x1000, 0}, eperm},
				{"setpriority", a, unix.SYS_SETPRIORITY, []uint64{0, 0, 19}, eperm},
				{"prlimit64 read", a, unix.SYS_PRLIMIT64, []uint64{0, unix.RLIMIT_AS, 0, 0x1000}, prlimitRead},
				{"prlimit64 write", a, unix.SYS_PRLIMIT64, []uint64{0, unix.RLIMIT_AS, 0x1000, 0}, prlimitWrite},
				{"prlimit64 write, high half", a, unix.SYS_PRLIMIT64, []uint64{0, unix.RLIMIT_AS, 1 << 32, 0}, prlimitWrite},
				{"another ABI", a ^ 1, unix.SYS_READ, nil, kill},
			} {
				if got := runFilter(t, prog, tc.arch, tc.nr, tc.args...); got != tc.want {
					t.Errorf("%s: verdict %#x, want %#x", tc.name, got, tc.want)
				}
			}
			if arch.x32 {
				if got := runFilter(t, prog, a, 0x40000000|unix.SYS_READ); got != eperm {
					t.Errorf("x32 read: verdict %#x, want %#x", got, eperm)
				}
			}
		})
	}
}
