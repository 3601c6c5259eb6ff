// Package secrets keeps users' secrets for their functions: encrypted at
// rest in etcd, versioned, handed to a function only under a grant, and
// every read recorded in an audit log.
//
// A secret is one etcd value, secrets/<owner>/<name>, holding its last
// versions and its grants. Each version's value is sealed under a data key
// of its own (package keyring: AES-256-GCM), and the data key is stored
// wrapped by the pool's master key, bound to the secret's owner, name and
// version, so neither etcd nor its backups hold a value in the clear, and a
// version's ciphertext copied under another name does not open.
//
// A grant names one function of the secret's owner. [Store.Read] is the
// only way to a value: it checks the grant, records an [Event] under
// audit/<owner>/ and only then returns the value; a read whose event cannot
// be recorded fails.
//
// # Caveats
//
//   - Values are at most MaxValueBytes, and a secret keeps its last
//     MaxVersions versions; older ones are dropped on Put.
//   - Audit events are kept for AuditRetention (an etcd lease per day of
//     events), then expire.
//   - Grants are by function name within the owner's namespace: a function
//     redeployed under the same name keeps its grants.
//   - Values pass through the pool's memory in the clear while they are
//     handed out; they never reach a log, an error or a metric from this
//     package.
package secrets
