package guest

// Secret returns the current value of the function owner's secret name,
// read by the pool for the call being served. The function must be granted
// it (taskworker deploy --secret NAME, or taskworker secret grant NAME
// --function F); each read is an audit event. The error's message starts
// with the gRPC code in snake case: "permission_denied: " for no grant (or
// a grant for injection into requests only), "not_found: " for no such
// secret (docs/ABI.md, secret_get). Call it only during a call; never log
// the value.
func Secret(name string) ([]byte, error) { return secretGet(name) }
