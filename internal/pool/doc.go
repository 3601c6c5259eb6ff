// Package pool is the node pool: the one front door of a TaskWorker network.
//
// Clients call the pool; the pool authenticates them, routes function calls
// to workers and keeps the control plane's state in etcd. The pool is
// stateless: every fact it acts on lives in etcd, and any number of pool
// processes over one etcd serve the same network.
//
// The concepts, one file each:
//
//   - [Server] (pool.go): lifecycle; owns the gRPC server, etcd client and
//     the goroutines below.
//   - tokens (tokens.go): API tokens, stored as hashes, cached from a watch;
//     their expiry, join tokens' uses (redeemJoin), listing and revocation;
//     the tap that refuses bad credentials from a call's headers.
//   - identities (identity.go, enroll.go, tls.go): the cluster CA, the
//     pool's certificate, workers' enrolment and the binding of each worker
//     id to one key; who a worker's call comes from (its certificate, for
//     the methods internal/auth gives to workers) and revocation.
//   - registry (registry.go): workers register with an etcd lease each; a
//     watch keeps every pool's view of the live workers current.
//   - drains (drain.go): a drained worker is left out of every replica's
//     routes; when the grace runs out each replica hands back the tasks it
//     runs there, and reports what it saw.
//   - router (router.go): picks a worker for a call by power of two choices
//     on outstanding calls; rpc.go forwards it, on the worker's call stream
//     (mux.go) or, for large arguments, as a call of its own; the worker's
//     answer goes back to the caller as the worker encoded it (codec.go).
//   - deployments (deploy.go, deployments.go, modules.go): deployed
//     functions, one namespace per user (OWNER/NAME), private unless public
//     or granted; their versions, grants and modules, content-addressed in
//     etcd and counted by reference; the module quotas.
//   - upkeep (compact.go): etcd's history compacted, and the embedded
//     etcd defragmented, on a schedule.
//   - files: the FileService, in package files, which the pool serves.
//   - services (rpc.go, admin.go, registration.go, dns.go): the gRPC
//     services.
//
// # Caveats
//
// Outstanding calls are counted per pool process, so with several pools each
// balances its own share; workers also report their total in-flight calls on
// heartbeat, which breaks ties.
//
// A drain's report adds up what each pool replica saw of its own calls and
// tasks on the worker; a replica that does not report within 10 s of the
// grace's end is counted as missing. A drain belongs to the worker's
// registration: one that registers anew (a restart, or a lease lost in an
// outage) is no longer drained.
//
// A worker's answer is forwarded without being decoded: the pool checks
// that it is a well-formed FunctionCallResponse (codec.go, checkResponse),
// not what it says, as it never did; a worker answers for the calls it
// is given.
//
// A call waits for its worker's answer until the call's deadline: one
// without a deadline, to a worker stuck but still heartbeating, waits until
// its caller gives up; a retired worker's calls get a minute (RATIONALE.md,
// "What bounds a call to a stalled worker?").
//
// Token checks answer from memory: a revocation takes effect on a pool
// when its watch delivers it, and expiry is compared with each pool's own
// clock, so pools with skewed clocks disagree by the skew. A token's last
// use is written at most once a minute per pool, and a use noted in the
// last moments before a pool is killed is lost. Unknown tokens cost at most
// 20 etcd reads a second per pool; beyond that they are refused from memory,
// which may refuse a token made through another pool in the last moments
// (docs/RATIONALE.md, "Why tokens as hashes, cached?"). The open methods
// (health, reflection) read messages up to the server's limit without a
// token ("Why are bad credentials refused from the headers?").
//
// DNSService and the DNS listener (dns.go, package dnsproxy) answer the
// network's zone with this pool's own address while a live worker serves
// the function (loopback where the pool listens on every interface), not
// the other replicas'. The zone answers anyone, so it holds native
// functions and public deployed ones (<name>.<owner>) only, and tells
// whether they exist, nothing more; a private function is not in it, even
// for the users it is granted to.
//
// The Calls quota is counted per pool replica (router.go, callCounts):
// with N pools, a user may run up to N times it at once. A deploy's module
// quota holds across replicas (its transaction requires the user's
// versions unchanged since it counted them).
//
// An undeploy is one etcd transaction with an operation per distinct
// module in the function's history: a function whose versions used more
// modules than etcd's limit of operations per transaction (128 by
// default) cannot be undeployed until that limit is raised.
//
// A user may deploy a name no native function has yet, and a worker that
// later registers a native function of that name is refused until the
// deployed one is undeployed: names are first come, first served between
// native and deployed functions.
//
// A join token's uses are spent by enrolment (redeemJoin), once per
// worker key; registration and heartbeats go by the worker's certificate.
//
// A worker's certificate is checked when its connection is made, and its
// binding (not revoked, not replaced) on every call; a connection outlives
// the certificate's expiry, not its revocation.
//
// With Config.Insecure everything is plaintext and workers join by the join
// token alone: any holder of it can register as any worker id. For a
// trusted host only; the pool logs a warning at every start.
package pool
