// Package names holds the one rule for each kind of name in the network:
// worker IDs, function names, user names, file IDs and SHA-256 strings. The
// library, the CLI, the pool and the worker all check names here, so a name
// one of them accepts is never refused by another.
//
// Each check returns nil or an error wrapping [ErrInvalid] whose message
// quotes the name (cut by [Truncate]) and says which characters are allowed:
//
//	names.Function("reports/daily")
//	// function name "reports/daily": use 1 to 200 letters, digits, '_', '.', ':' or '-', starting with a letter or '_'
//
// No name may contain '/': names become parts of etcd keys
// (deploy/versions/<owner>/<name>/<version>), and a '/' would let one name
// reach into the keys of another (docs/RATIONALE.md, "Why one rulebook for
// names?"). The one '/' there is separates a deployed function's owner from
// its name, OWNER/NAME, which [QualifiedFunction] splits.
//
// # Caveats
//
// The rules are ASCII only, on purpose: two names that look alike are two
// different byte strings. Changing a rule to refuse more would strand names
// already in use; widen rules, never narrow them, without a migration.
package names
