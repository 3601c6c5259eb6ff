// Package auth holds what the pool, the workers and the clients share about
// who may call what: API tokens (their form, their hash, how they travel in
// gRPC metadata), the worker's call key, and the one authorization table of
// the network.
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
// the worker (open, or the pool's call key). The pool's interceptor asks
// [Authorize]; the worker's interceptors ([UnaryCallKeyInterceptor],
// [StreamCallKeyInterceptor]) ask [Lookup]. A method missing from the table
// gets [Denied], the zero value: nobody may call it. A test walks every
// service registered on a real pool's and a real worker's grpc.Server
// ([CheckServices]), so a method added without an entry fails it, before
// any caller sees the PermissionDenied. (docs/RATIONALE.md, "Why one
// authorization table, deny by default?")
//
// # Caveats
//
//   - Tokens and the call key travel in cleartext metadata until the
//     network has TLS: anyone on the path can read them.
//   - The table says which kind of caller may call a method, not on whose
//     data: a user's token admits FileService calls, and the service checks
//     that the files are that user's (the pool's checkUser).
package auth
