// Package auth holds what the pool, the workers and the clients share about
// who may call what: API tokens (their form, their hash, how they travel in
// gRPC metadata), and the one authorization table of the network. Who a
// peer is (its certificate) is internal/pki's.
//
// A token is "tw_" followed by 43 base64url characters (32 random bytes). The
// pool stores only its SHA-256; the token itself is shown once. Its [ID], the
// first [IDLen] hex digits of that hash, names it in lists and revocations.
//
// A token's role is a field of its record, never read from its user's name.
// The user names of the pool's bootstrap tokens, [AdminUser] and [JoinUser],
// are reserved to their roles ([CheckReserved]), because a user's files and
// functions are keyed by the name.
//
// # The table
//
// Every gRPC method of the pool and the worker has one entry, a [Rule]:
// its [Access] on the pool (open, or a user, worker or admin token) and on
// the worker (open, or the pool's certificate). The pool's interceptor asks
// [Authorize]; the worker's interceptors ([UnaryWorkerInterceptor],
// [StreamWorkerInterceptor]) ask [Lookup]. A method missing from the table
// gets [Denied], the zero value: nobody may call it. A test walks every
// service registered on a real pool's and a real worker's grpc.Server
// ([CheckServices]), so a method added without an entry fails it, before
// any caller sees the PermissionDenied. (docs/RATIONALE.md, "Why one
// authorization table, deny by default?")
//
// # Caveats
//
//   - Tokens travel in metadata, protected by TLS; with --insecure they
//     are cleartext, and anyone on the path can read them.
//   - The table says which kind of caller may call a method, not on whose
//     data: a user's token admits FileService calls, and the service checks
//     that the files are that user's (the pool's checkUser).
package auth
