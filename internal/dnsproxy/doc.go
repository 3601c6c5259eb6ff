// Package dnsproxy is the pool's DNS: it answers DNSService.ResolveDomain
// ([Resolver.Handle]) and, when turned on, a standard DNS listener over UDP
// and TCP ([Resolver.Serve]), both from one [Resolver].
//
// A Resolver answers two kinds of names:
//
//   - The network's own zone (Config.Zone, fn.taskworker.internal by
//     default) is answered from a [Directory] of the pool addresses serving
//     each function, so DNS doubles as service discovery:
//
//     add.fn.taskworker.internal                    A, AAAA  the addresses serving "add"
//     _taskworker._tcp.add.fn.taskworker.internal   SRV      0 1 <port> <address name>, one per address
//     10-0-0-5.add.fn.taskworker.internal           A        10.0.0.5, while it serves "add"
//     0x<32 hex digits>.add.fn.taskworker.internal  AAAA     an IPv6 address, likewise
//
//     The SRV name is RFC 2782's _service._proto.name with the service
//     "taskworker" over TCP (gRPC). An SRV target must be a host name, not
//     an address, so each address gets a name under its function; such a
//     name starts with a digit, which no function name does.
//
//   - Every other name is asked of the upstream resolvers (Config.Upstreams,
//     or the system's from /etc/resolv.conf), for A, AAAA, CNAME, TXT and
//     SRV records, under the network's rules: the name must pass the
//     [Allowlist] for the user asking, CNAMEs are followed up to
//     Config.MaxCNAMEChain, and A and AAAA records whose address the
//     [Policy] refuses (loopback, private, link-local, ...: the egress
//     package's rules) are left out; a name left with no address is an
//     error that names the rule.
//
// [Resolver.LookupNetIP] resolves through the same cache for the egress
// client (it is an egress.Resolver), without the allowlist or the policy:
// the egress client judges every address itself, and refuses a name with
// any refused address whole.
//
// Answers are cached by question (name, type), for their records' TTL
// clamped to [Config.MinTTL, Config.MaxTTL]; NXDOMAIN and NODATA answers for
// their SOA's negative TTL (RFC 2308) capped by Config.MaxNegativeTTL.
// Concurrent identical misses share one upstream query. The cache holds at
// most Config.CacheEntries questions and drops the least recently used.
//
// The listener answers the zone to anyone and other names only to the
// sources in Config.Recursive (none by default: it is not an open
// resolver); it refuses (REFUSED) everything else. Against amplification,
// a UDP answer larger than 512 bytes, or than the client's EDNS0 size
// (at most Config.UDPSize), is truncated with the TC bit so the client asks
// again over TCP; and each source address has a token bucket
// (Config.RateBurst queries at once, Config.RatePerSource a second): over
// it, UDP queries get no answer and TCP ones REFUSED.
//
// Why the pool answers DNS at all, and what it refuses:
// docs/RATIONALE.md, "Why the pool answers DNS, and what it refuses".
//
// # Caveats
//
//   - Names are matched in ASCII lower case, as DNS does: a function whose
//     name has capital letters is found in the zone only if the Directory
//     folds case. Names with characters DNS host names do not use (':',
//     '.' inside a function name is fine) cannot be asked.
//   - The zone tells anyone who can ask which functions are served and at
//     which pool addresses; the Directory decides what it lists.
//   - The Allowlist is checked on the name asked, not on the CNAME targets
//     it leads to (content networks alias everything); the Policy is
//     checked on every address, which is what protects the network.
//   - Resolution is not a security boundary for egress by itself: an
//     address may change between a lookup and a connection, so the egress
//     proxy checks the address it dials, not the name.
//   - A caller that gives up does not cancel the upstream query it started:
//     others may be waiting for it, and Config.UpstreamTimeout bounds it.
//   - Upstream failures (timeouts, SERVFAIL) are not cached: a flood of
//     questions for a broken name reaches the upstreams, one at a time per
//     question.
//   - Over the rate limiter's source bound (Config.RateSources), new
//     sources share one bucket, so a flood of spoofed sources slows
//     everyone's first queries rather than growing memory.
//   - Responses are not DNSSEC-validated; the upstream is trusted to do it.
package dnsproxy
