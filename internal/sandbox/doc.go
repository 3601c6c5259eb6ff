// Package sandbox runs untrusted WebAssembly functions for a worker: Extism
// plugins, hosted on wazero by this package (extism.go: the Extism kernel
// that go-sdk ships, and the extism:host/env functions), so modules written
// with any Extism PDK, or with this repository's Go guest SDK (package
// guest), run unchanged, under limits the host sets.
//
// There are three types, and the errors:
//
//   - Runtime, one per worker, made from a Config (operator maximums and
//     defaults, the compiled-code cache directory). Runtime.Load checks and
//     compiles a module and returns a Module; Runtime.Stats counts how the
//     compiled code was obtained (compiled, read from disk, shared in memory).
//   - Module, one per deployed function version, made with a Spec (export,
//     memory, timeout, concurrency, input and output sizes). Module.Call runs
//     one call on an instance kept by a childproc.Supervisor (as the
//     Starlark runner's processes are), Module.CallFor one for a caller:
//     the Spec.Concurrency instances are shared fairly between callers
//     (childproc.FairQueue: all but one each, no more than the CPUs);
//     Module.CallThrough one that must also pass the worker's Gate, its
//     bound on the calls of all functions; Module.Close drains and
//     releases it.
//   - Host, the worker's side of the taskworker import namespace's log,
//     per function, routed to a slog.Logger by SlogHost. What a call
//     reaches outside (secret_get, http_fetch and http_body, with
//     last_error; Extism's http_request) is the call's: the host functions
//     take it from the call's ctx (package callhost), and a child process
//     asks the worker for it over its pipe (frameHostOp, frameHostReply),
//     counted and bounded on both sides (hostcall.go, docs/ABI.md).
//   - Errors wrap sentinels grouped by phase (Load: ErrNotWasm,
//     ErrInvalidModule, ErrUnknownImport, ErrMissingExport, ErrInvalidSpec;
//     Call: ErrTimeout, ErrMemoryLimit, ErrInputTooLarge, ErrOutputTooLarge,
//     ErrTrap, ErrBusy, ErrCanceled, ErrClosed) or are a *GuestError, the
//     function's own. childproc.GRPCStatus maps any of them to the status
//     a caller should see.
//
// What a module gets: its input, the Extism kernel, WASI with nothing
// granted (no arguments, no environment, no files or directories, no
// sockets; real clocks and cryptographic randomness), and the taskworker
// host functions. Extism's http_request goes out through the pool, as
// taskworker.http_fetch does, never from the worker itself. Every problem
// with a module (not WebAssembly, truncated, an import this host does not
// provide, a missing export, a memory too large to start) is reported by
// Load, not by the first call.
//
// An instance runs its guest's start-up (a Go guest's runtime and package
// initialization: _initialize, hs_init or __wasm_call_ctors) when it is
// made, before and outside any call (instance.start): under the function's
// time limit and memory budget, logging as the function, reaching nothing
// outside (a secret read or a fetch is refused). In a child, the worker
// asks for it once the process is confined (frameStart) and kills the
// process at the time limit. A start-up that fails fails Load; an instance
// a child makes again after a trap runs it in its next call.
//
// Each call runs on an instance of its own, under a deadline (the smaller of
// Spec.Timeout and the caller's), a memory budget (Spec.Memory, over all
// the instance's memories) and input and output size limits. An instance that
// trapped, timed out, was canceled or outgrew its memory is thrown away and
// replaced on demand; an instance whose function returned an error is kept.
// A misbehaving call ends only itself.
//
// Where instances run is the Config's choice:
//
//   - In child processes (Config.ChildCommand; what a worker does): each
//     instance lives in a supervised process of its own (package
//     childproc: started from the worker binary, ChildMain, hardened with
//     rlimits, no_new_privs and seccomp after it has loaded the module, in
//     namespaces of its own where the system allows; without its seccomp
//     filter it refuses, and Load fails with ErrUnconfined, unless
//     Config.AllowUnconfined),
//     serving one call at a time over pipes. A caller's calls that wait
//     while its turns are taken go to a process together when a turn
//     comes, up to 16 in one write (batch.go), and the process runs them
//     one after another, each under its own limits; the calls of a batch
//     behind one that killed its process run again on another (none of
//     their requests to the host was served). The process may hold back
//     the answers of calls that sent it nothing else, for a few
//     milliseconds, to send them in one write (holdAnswers): their time
//     limits are armed as late, and when the process dies with answers
//     held, the calls that may have been answered run again, each alone. A call past its deadline is
//     ended by killing the process, so the guest runs without any deadline
//     checks, at full speed, and a bug in the runtime is still behind a
//     second boundary. A process whose instance trapped or outgrew its
//     memory stays: it makes a new instance at once from the code it has
//     compiled, in milliseconds; only a timeout (or a death) costs the
//     process. Processes start in the background, when one was killed and
//     when a call takes a function's last idle one (up to
//     Spec.Concurrency), and a call that finds none idle starts one but
//     takes whichever process of its function is free first, its own or
//     one another call gave back meanwhile: a burst waits for the calls
//     ahead of it, not for process starts. The worker never runs the
//     module's code itself: Load compiles and checks it, then starts the
//     first process.
//   - In this process (no ChildCommand): deadlines are enforced by
//     wazero's WithCloseOnContextDone, which calls out of compiled code at
//     every loop iteration (a tight loop runs about 15x slower), and each
//     call into a module starts a goroutine.
//
// # Caveats
//
//   - A child process costs a process start and a load of the compiled
//     code from Config.CacheDir (wazero decodes and validates the module
//     again): 30 ms for a small Rust plugin, 90 ms for a Go guest, paid
//     at Load (the first process), after a timeout killed one, and when
//     more calls run at once than there are processes; a call waits for a
//     start only while every process of its function stays busy longer
//     than the start takes. In process, and in a child after a trap, a new
//     instance costs 1-5 ms, its start-up included. The first call on a
//     started process costs under 1 ms. docs/RATIONALE.md has the figures.
//   - With child processes, while the worker has one WebAssembly call at a
//     time (no other running or waiting), the worker polls for its child's
//     answer for up to 100 µs and the child for its next call for up to
//     twice the last gap (under 1 ms) instead of sleeping, yielding the CPU
//     between polls: CPU spent to save the wake-ups that were most of a
//     call's cost on a virtual machine. With more calls in flight neither
//     polls. Both sides read and write the
//     pipes with raw system calls and wait in the Go runtime's poller
//     (childproc.RawPipe), so that a call wakes neither side's runtime
//     monitor thread: a warm call costs the child one wake-up.
//   - With child processes, Spec.Memory bounds linear memory exactly,
//     as in process; the process's Go heap is capped at about twice that
//     plus 32 MiB (a grow copies the memory), and its address space above
//     that: a runtime bug that allocates outside linear memory kills the
//     process, not the worker.
//   - The Extism kernel is a copy of go-sdk's (extism-kernel.wasm);
//     TestKernelIsGoSDKs fails when a go-sdk upgrade brings another, and
//     TestExtismConformance runs Extism's fixture plugins through both.
//   - Load merges a module's nearby data segments before it compiles
//     (datamerge.go), so that the compiled code is that of an equivalent
//     module with fewer segments; FuzzMergeDataSegments checks the rewrite.
//   - A host function that blocks is not interrupted by the deadline: the
//     deadline is checked when it returns. Host functions must honor their
//     ctx (taskworker.log does not block; a secret read or a fetch waits
//     for the pool within the call's time limit).
//   - A refused or failed Extism http_request traps the call (as Extism's
//     own host does), so the instance is discarded; taskworker.http_fetch
//     returns 0 instead, for a guest that handles refusals.
//   - The guest's time.Sleep returns at once: no real sleep is granted, so a
//     sleeping guest cannot hold an instance without spending its CPU time.
//   - Extism's own log functions (log_info and so on) are off (get_log_level
//     says so, and they drop their line); guests log through taskworker.log.
//   - Extism vars (var_get/var_set) persist across the calls one instance
//     serves, as guest globals do, capped at 64 KiB; neither outlives the
//     instance, and which instance serves a call is not defined.
//   - Compiled code is cached per wazero version under Config.CacheDir; the
//     directory must be the worker's own (wazero trusts what it reads there).
//     RuntimeStats tells a compile from a cache hit by watching the directory
//     around it, so compiles are serialized within a Runtime, and the counts
//     are exact only while no other process compiles into the directory.
package sandbox
