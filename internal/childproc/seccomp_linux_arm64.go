package childproc

import "golang.org/x/sys/unix"

// thisArch is the filter's architecture: AArch64. Its kernels may also
// take 32-bit ARM calls, which have another audit arch and so kill the
// process. The list is amd64's, less the calls arm64 never had (time,
// arch_prctl, poll, epoll_wait: the runtime uses ppoll and epoll_pwait
// here), and glibc reads its limits with prlimit64, allowed read-only.
var thisArch = seccompArch{
	audit: unix.AUDIT_ARCH_AARCH64,
	allowed: []uint32{
		unix.SYS_READ, unix.SYS_WRITE, unix.SYS_READV, unix.SYS_WRITEV, unix.SYS_CLOSE, unix.SYS_FSTAT,
		unix.SYS_FCNTL,
		unix.SYS_MUNMAP, unix.SYS_MADVISE, unix.SYS_MREMAP, unix.SYS_BRK, unix.SYS_MINCORE,
		unix.SYS_RT_SIGACTION, unix.SYS_RT_SIGPROCMASK, unix.SYS_RT_SIGRETURN, unix.SYS_SIGALTSTACK,
		unix.SYS_SCHED_YIELD, unix.SYS_SCHED_GETAFFINITY, unix.SYS_NANOSLEEP, unix.SYS_CLOCK_NANOSLEEP,
		unix.SYS_CLOCK_GETTIME, unix.SYS_CLOCK_GETRES, unix.SYS_GETTIMEOFDAY,
		unix.SYS_FUTEX, unix.SYS_GETPID, unix.SYS_GETTID,
		unix.SYS_EXIT, unix.SYS_EXIT_GROUP, unix.SYS_RESTART_SYSCALL,
		unix.SYS_EPOLL_CREATE1, unix.SYS_EPOLL_CTL, unix.SYS_EPOLL_PWAIT,
		unix.SYS_EVENTFD2, unix.SYS_PIPE2,
		unix.SYS_PPOLL, // readiness of descriptors it has: Spin
		unix.SYS_GETRANDOM, unix.SYS_GETRLIMIT,
		// glibc's pthread_create, in binaries with cgo or the race detector.
		unix.SYS_RSEQ, unix.SYS_SET_ROBUST_LIST,
	},
	mmap: unix.SYS_MMAP, mprotect: unix.SYS_MPROTECT,
	clone: unix.SYS_CLONE, clone3: unix.SYS_CLONE3,
	kill: unix.SYS_KILL, tgkill: unix.SYS_TGKILL,
	schedSetscheduler: unix.SYS_SCHED_SETSCHEDULER,
	prlimit64:         unix.SYS_PRLIMIT64,
}
