// Package secrets keeps users' secrets for their functions: encrypted at
// rest in etcd, versioned, handed to a function only under a grant, and
// every read recorded in an audit log. It also serves them: the
// SecretService ([Server]) to their owners, and the KeyService
// ([KeyServer]) to admins, which rotates the master key and rewraps every
// store of data keys under it.
//
// A secret is one etcd value, secrets/<owner>/<name>, holding its last
// versions and its grants. Each version's value is sealed under a data key
// of its own (package keyring: AES-256-GCM), and the data key is stored
// wrapped by the pool's master key, bound to the secret's owner, name and
// version, so neither etcd nor its backups hold a value in the clear, and a
// version's ciphertext copied under another name does not open.
//
// A [Grant] names one function of the secret's owner, and optionally the
// hosts (egress --allow-host rules) its value may be sent to. [Store.Read]
// is the way to a value for a function with a grant without hosts;
// [Store.EgressGrants] is the egress proxy's, to inject it into an outbound
// request ({{secret:NAME}}) toward the grant's hosts, or the function's own
// rules for a grant without hosts (docs/RATIONALE.md, "Why may a grant name
// hosts?"). Either checks the grant, records an [Event] under audit/<owner>/
// and only then hands the value over; a read whose event cannot be recorded
// fails.
//
// [Server.ServeCalls] makes the SecretService serve ReadForCall too: a
// worker's read for the function call it runs, named by the call's token
// and resolved by the pool's calls in flight (egress.CallResolver), then
// [Store.Read] for the call's function, with the call's caller in the
// audit event.
//
// The servers take the pool's user check (a request's user_id: empty is
// the token's user, an admin may name any) and map the store's errors to
// statuses: NotFound for a missing secret or grant, InvalidArgument for a
// bad name, value or host rule, PermissionDenied for a read without a
// grant.
//
// # Caveats
//
//   - Values are at most MaxValueBytes, never empty, and a secret keeps its
//     last MaxVersions versions; older ones are dropped on Put.
//   - Audit events are kept for AuditRetention (an etcd lease per day of
//     events), then expire. Audit of one secret scans the owner's events,
//     newest first, until it has enough.
//   - Grants are by function name within the owner's namespace: a function
//     redeployed under the same name keeps its grants.
//   - Values pass through the pool's memory in the clear while they are
//     handed out; they never reach a log, an error, a response or a metric
//     from this package (the tests grep debug-level logs and every
//     response for them).
//   - RotateKeys rotates the key file of the pool replica that answers it;
//     the operator copies the key file to the other replicas (package
//     keyring). A store that fails to rewrap is reported in the response,
//     not as the call's status: the rotation stands (docs/RATIONALE.md).
package secrets
