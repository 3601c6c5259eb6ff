// Package starlarkrun runs untrusted Starlark scripts (go.starlark.net, in
// a Python-like dialect) natively, in pre-started child processes that it
// supervises: the process is the boundary that bounds memory, which
// starlark-go cannot do in-process, and the deadline is a SIGKILL, so the
// interpreter runs at full speed with no per-step checks
// (docs/RATIONALE.md, Starlark has the measurements and the reasons).
//
// The child is the worker binary itself: its main must call Main, before
// anything else, when its first argument is ChildArg:
//
//	if len(os.Args) > 1 && os.Args[1] == starlarkrun.ChildArg {
//		os.Exit(starlarkrun.Main())
//	}
//
// and the worker passes Config.Command = {os.Executable(), ChildArg}.
//
// There are few types:
//
//   - Pool, made by New from a Config (the child command, how many children,
//     the operator's maximums and the default Limits). Pool.Call runs one
//     Request (a script's source, the function to call, its JSON arguments,
//     Limits, a tenant, a caller, a Host) on an idle child, kept per memory
//     limit and tenant by a childproc.Supervisor (as the WebAssembly
//     runner's are) and shared fairly between callers (at most
//     Config.MaxChildrenPerCaller each), and returns the result as JSON. Pool.Close kills every child and
//     waits for them.
//   - Check compiles a script in-process, as a deploy must, and reports a
//     syntax error, an undefined name, a load statement or a missing
//     function, with the line.
//   - Host is the worker's side of the log builtin (and print), which
//     reaches it over the pipe while the script waits. secret(name) and the
//     http module (http.get, http.post, ...) go the same way to the call's
//     own Host (package callhost, from the call's ctx), which asks the
//     pool; docs/ABI.md, "Starlark", has what scripts see.
//   - Errors wrap sentinels grouped by phase (Check: ErrInvalidScript; Call:
//     ErrInvalidLimits, ErrInvalidArgs, ErrInputTooLarge, ErrOutputTooLarge,
//     ErrScript, ErrTimeout, ErrMemoryLimit, ErrCanceled, ErrCrashed,
//     ErrBusy, ErrStart, ErrClosed); a *ScriptError carries the script's
//     message and line. The shared ones are childproc's, the others have a
//     childproc.Kind; childproc.GRPCStatus maps any of them to what a caller
//     sees.
//
// A script gets Starlark's built-ins (with while loops, top-level
// statements, reassignable globals and sets; without recursion), the json
// and math modules, and log. Its top level runs once per child, then its
// globals are frozen, so calls cannot leave state for later calls. JSON
// arrays and objects become lists and dicts (object order kept), numbers
// become ints of any size or floats; a result with no JSON form is an error
// that names where the bad value is.
//
// Children are kept per memory limit and tenant: a child's memory limit is
// fixed for its life, and calls of different tenants never share a
// process. Each child caches its compiled, loaded scripts by SHA-256. A
// call that times out, outgrows its memory or crashes ends its child, which
// is replaced in the background; a script error leaves the child serving.
//
// What a child is: the process boundary of package childproc (empty
// environment, no files, no sockets, rlimits, no_new_privs, seccomp, and
// new user, mount and network namespaces where the system allows), set up
// before any script runs. A child that cannot install its seccomp filter
// refuses, and calls fail with ErrUnconfined, unless
// Config.AllowUnconfined.
//
// # Caveats
//
//   - The memory limit is on the live heap, as the garbage collector sees
//     it at the end of each cycle (checked after each cycle and every 2^18
//     Starlark steps): a script is stopped within about one cycle of going
//     over (the soft limit, a quarter above, makes cycles frequent there),
//     with the line it was on. Between cycles it can hold more, up to
//     RLIMIT_AS: the child's baseline virtual size + 1.25 x the limit +
//     100 MiB (one 64 MiB heap arena, in which Go reserves address space,
//     and runtime metadata). A single allocation past that, like
//     "x" * 1000000000, kills the child at once, without a line number
//     (package childproc's caveats say what else counts against the cap).
//   - Compiled scripts and their frozen globals stay cached in the child
//     and count against the limit of later calls in it; a script whose top
//     level builds large data makes the child's other calls fail sooner.
//     A memory error ends the child, and the cache with it.
//   - Calls of one tenant share processes: a script that exploited an
//     interpreter bug could see later calls of the same tenant (their
//     arguments and results), not other tenants'. The caller chooses the
//     tenant; empty is one shared tenant.
//   - Check compiles in the calling process: linear in the source, but a
//     256 KiB script that is one long expression costs 0.2-0.4 s and
//     64 MiB of allocation; keep Config.MaxSource (and the deploy limit) modest.
//   - A Host method that blocks holds the call past its deadline on the
//     worker's side (the child is killed on time); Host methods must honor
//     their ctx.
//   - Idle children stay until the pool needs their slot for another
//     memory limit or tenant; there is no idle timeout.
//   - Close kills children that are running calls; drain calls first.
package starlarkrun
