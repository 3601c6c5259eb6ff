package dnsproxy

import "errors"

// The errors a resolution ends with, grouped by who can fix them. Every error
// [Resolver.Resolve] returns wraps exactly one of them; [Handle] turns them
// into gRPC statuses and the listener into response codes.
var (
	// The caller's request is malformed: fix the name or the type.
	ErrInvalidName = errors.New("invalid domain name")
	ErrInvalidType = errors.New("unsupported record type")

	// The network's policy refuses the request: the name is not on the
	// user's allowlist, or every address it resolves to is in a refused
	// range (the wrapped policy error names the rule).
	ErrNameRefused         = errors.New("name refused by the network's policy")
	ErrAllAddressesRefused = errors.New("every address was refused by the network's policy")

	// The name has no answer: it does not exist (NXDOMAIN), it has no
	// records of the type asked (NODATA), or its CNAME chain loops or is
	// longer than Config.MaxCNAMEChain.
	ErrNotFound   = errors.New("no such domain")
	ErrNoRecords  = errors.New("no records of this type")
	ErrCNAMEChain = errors.New("CNAME chain loops or is too long")

	// No upstream resolver gave an answer (timeouts, SERVFAIL, REFUSED, none
	// configured): retrying later may help.
	ErrUpstream = errors.New("upstream resolvers did not answer")
)
