// Package childproc is the process boundary the worker runs untrusted code
// behind: supervised child processes, started from the worker's own binary,
// that talk to the worker over a pair of pipes in frames, hold no
// credentials, and are killed when a call overruns. The Starlark runner
// (package starlarkrun) and the WebAssembly runner (package sandbox, in its
// child-process isolation) are its two payloads; this package is what they
// share, so that the boundary is built, hardened and tested in one place.
//
// The parent's side:
//
//   - Supervisor keeps a payload's children per class (what a child is
//     started for and cannot change: a Starlark child's memory limit and
//     owner, a WebAssembly child's module): Acquire, for a tenant (the user
//     calling), first takes the tenant's turn in a FairQueue, then an idle
//     child of the class, or starts one (and takes whichever child of
//     the class is ready first, that one or one released meanwhile,
//     which goes to the call waiting longest), or
//     evicts the idle child of another class used least recently, or
//     waits (ErrBusy); Release and
//     Discard give the child and the turn back; spares start when a call
//     takes a class's last idle child, replacements after a discard; Close
//     kills them all and waits. It also keeps the WebAssembly runner's
//     in-process instances, which are children in all but the process.
//   - FairQueue shares a number of slots between tenants: at most
//     PerTenant each (by default all but one slot, and no more than the
//     CPUs: DefaultPerTenant), and, when slots are short, the next free
//     one to the waiting tenant holding fewest (by weight), then to the one
//     served longest ago, then to the one waiting longest. A tenant that
//     floods delays its own calls. The worker also uses one on its own
//     for the WebAssembly calls of all functions.
//   - Process.Call is one call on a child: the call frame, the child's
//     frames (served by the payload) until a result or an error frame,
//     the kill at the deadline, and a CallError that says why a child was
//     lost (timeout, caller's deadline, cancel, output, memory, crash).
//     Process.CallBatch is several calls written to a child at once, each
//     under its own limits from its start; the calls behind one that
//     killed the child are safe to run again (none of their requests to
//     the host was served).
//   - Limits is a call's limits, the one type both runners use; Kind and
//     NewError make every runner error one of a few kinds, and GRPCCode
//     and GRPCStatus map them to what a caller sees, here only.
//   - Start starts a child (Spec: its command, the hello frame that
//     configures it, a start-up timeout) and waits for its ready frame.
//     Process is the handle: its buffered pipe ends (W, R), Kill, Exited,
//     and what is known of how it ended (ExitCode, ExitSummary, Stderr).
//     With Spec.Poll the parent's ends are RawPipes, read and written with
//     raw system calls and waited for in the runtime's poller; a child
//     makes its own ends RawPipes with NewRawPipe and RawPipeOf.
//   - WriteFrame, WriteJSONFrame and ReadFrame are the wire format: one type
//     byte, a 4-byte big-endian length, the payload; the reader bounds
//     each frame's size by its type.
//
// The child's side, in this order, before any untrusted code runs:
// Attach, LimitMemory, then whatever the payload
// must open or map (compiled code, caches), then Harden.
//
// What a child is once hardened: an empty environment, working directory
// /, only stdin, stdout and stderr (it closes descriptors it inherited
// without close-on-exec), a process group of its own, SIGKILL when the
// worker dies, RLIMIT_CORE and RLIMIT_FSIZE 0, RLIMIT_AS over its own
// baseline, a Go soft memory limit, and no_new_privs and a seccomp filter
// that answers EPERM to every system call the Go runtime does not need: no
// open, socket, exec, fork, ptrace, setrlimit; no new executable mappings;
// signals only to itself. A child that cannot install the filter refuses to
// run (ErrUnconfined, FailedPrecondition) unless the operator allowed it
// (--allow-unconfined, passed in each payload's hello to Harden). Where
// the system allows, a child also runs in new user, mount and network
// namespaces: Start asks Attach for them, which starts the child again in
// them (Namespaces says whether they are in use, LogLayers logs it).
// Audit and Inspect check a running child from outside; package
// childproctest starts children where seccomp is refused, for tests.
//
// # Fair sharing
//
// Acquire is the only place a call gets a child, and the FairQueue in
// front of it is where tenants are kept apart: one user's many calls wait
// in that user's queue, never in front of another user's, and never hold
// every child, so another user's call gets a child at once (its own idle
// one, or one started in the room kept free), however long the flood's
// calls run. Making room evicts the idle child used least recently, and a
// call whose class has a spare or replacement starting waits for it rather
// than evict another class's; no replacement starts while calls wait
// their turn, as they will start their own. docs/RATIONALE.md, "Why
// fewest-held-first fair queuing?", has the reasons and the figures.
//
// # Caveats
//
//   - Counts (Classes) are the process's, kept in package variables: every
//     child started with a Spec.Class is counted, whoever started it. The
//     worker's metrics read them; a test that asserts them uses a class of
//     its own.
//   - Fair sharing bounds how many children each tenant holds, not the CPU
//     time they take: the cap of at most one child per CPU is what keeps a
//     flood from slowing others' calls much (docs/BENCHMARKS.md, "Fair
//     sharing"). Calls of different functions of one tenant share its cap.
//     A tenant is whatever the payload passes (the worker passes the
//     calling user); the empty tenant is one tenant like the others.
//   - The seccomp filter exists for linux/amd64 and linux/arm64 (the
//     arm64 one is built and vetted here, not run); elsewhere children
//     refuse to run unless allowed, and then have no_new_privs (on the
//     starting thread only if the binary has cgo) and the rlimits on
//     Linux, only the soft memory limit off it. The filter allows read and write on any descriptor the child has:
//     its pipes, and the cgroup CPU files the Go runtime keeps open to
//     size GOMAXPROCS (read-only).
//   - With namespaces, each child is two processes: the one Start started,
//     which made the namespaces and waits, and the payload under it, whose
//     pid its ready frame carries (Process.PID is the first's). Making them
//     in the worker would be a fork of the whole worker: see
//     docs/RATIONALE.md, "Why namespaces under the seccomp filter?".
//     A start whose namespaces are refused is made again without them,
//     and then no later start asks for them.
//   - If the worker runs as root, so do its children; seccomp then still
//     refuses setrlimit, ptrace and file access, but the process keeps
//     root's identity. Run the worker as an unprivileged user.
//   - Pdeathsig, which kills a child when the worker dies, follows the OS
//     thread that started it: a thread that exits (only a goroutine that
//     ends while locked to its thread does that) kills the children it
//     started, which then fail their call and are replaced.
//   - In a binary linked with libc (cgo, which the net package brings in
//     unless CGO_ENABLED=0), each thread started after start-up maps an
//     8 MiB stack and a 64 MiB malloc arena: LimitMemory starts eight
//     threads before it measures the baseline and allows two more; a child
//     that needs more dies as out of memory. Race-detector builds get 2 GiB
//     more address space.
package childproc

// Sizes.
const (
	KiB = 1 << 10
	MiB = 1 << 20
	GiB = 1 << 30
)
