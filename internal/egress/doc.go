// Package egress is how function code reaches the outside: the pool carries
// out an outbound HTTP request on the function's behalf, under the
// function's policy, and nothing else leaves. It is the core of the egress
// proxy; the pool, the library's Fetch, the sandbox's host function and the
// Starlark builtins hand their requests to it.
//
// There are only a few types:
//
//   - [Rule] and [Allowlist]: the destinations a function may reach, parsed
//     from its deploy's --allow-host rules (https://api.example.com,
//     https://*.example.com, http://host:8080). Deny by default.
//   - [Policy]: the addresses outbound requests may reach: all but the
//     special-purpose networks (loopback, private, link-local with the
//     cloud metadata address, unique-local, CGNAT, multicast, unspecified,
//     broadcast, reserved, documentation, benchmarking) and the IPv6 forms
//     that embed such an IPv4 address (IPv4-mapped, IPv4-compatible, NAT64,
//     6to4, Teredo, IPv4-translated), unless the operator allows a network
//     (--egress-allow-net).
//   - [Client]: the one HTTP client, shared by every function. It ignores
//     proxy settings from the environment, resolves names itself through a
//     [Resolver], checks every address of the answer, dials exactly the
//     address it checked, and checks it once more in the dialer's Control
//     hook just before connecting (docs/RATIONALE.md, "Why the pool checks
//     addresses after resolving, and dials what it checked").
//   - [Scope]: one function call's rights and budget: its allowlist, its
//     secret [Grants], a lookup of [Secrets], and how many requests it may
//     still make. Every request and every redirect is checked against it;
//     each secret is read once per call, however many requests carry it.
//     [Client.Fetch] takes a [Request] held in memory; [Client.HTTPClient]
//     is the same as an *http.Client.
//   - [Server]: the EgressService, a user's request carried out by hand
//     (taskworker fetch) under an allowlist it gives, and, as one of the
//     user's functions, under that function's secret grants that name hosts
//     ([Grantor]; docs/RATIONALE.md, "Why does a fetch by hand use only
//     grants that name hosts?"). With [Server.ServeCalls], it also serves
//     FetchForCall: a worker's request for the function call it runs, named
//     by the call's token, which a [CallResolver] (the pool's calls in
//     flight) turns into the [Call]: its owner, function, caller and
//     --allow-host rules. A call's requests share one Scope (one budget,
//     one read of each secret, one redactor) until the call is Done.
//     [ResolveCall] is that step at an RPC boundary, which the
//     SecretService's ReadForCall shares.
//
// # Secrets
//
// A header value or a query value may hold {{secret:NAME}}; [Inject]
// replaces it on the way out, and only toward a destination the secret's
// grant allows, so the function calls an API with a key it never sees.
// Templates in the URL's path or host, in header names or in query keys are
// refused; a body is sent as it is (a template there stays literal text).
// Every value injected during a call is redacted ([redacted:NAME]) from each
// response of that call, in its status, headers, trailers and whole body
// (read whole, as responses are size-capped), and from error messages. The
// mark is the same whatever the value, and a response whose body redaction
// changed carries the redacted body's Content-Length and none of the headers
// derived from the original body (Content-Range, ETag, digests): nothing the
// function gets depends on the value's length ([Redactor.Response]).
//
// # Errors
//
// Every error wraps one of the sentinels (ErrHostNotAllowed,
// ErrAddressRefused, ...) and says which rule refused and what would allow
// it; a refused address is an [*AddressError]. Each sentinel has a
// serving.Kind, so serving.GRPCStatus maps them at the pool's RPC boundary:
// policy refusals are PermissionDenied, malformed input InvalidArgument,
// limits ResourceExhausted, time DeadlineExceeded, a destination that does
// not answer Unavailable.
//
// # Caveats
//
//   - Redaction finds the exact bytes of a value. A server that transforms
//     what it echoes (base64, hex, a part of it, another case) defeats it.
//     The request side closes what it can: Accept-Encoding is the
//     transport's (bodies come back decoded), a response whose
//     Content-Encoding the transport did not decode is refused when a secret
//     was injected, and a request with a secret may not ask for a Range.
//     Grant secrets only to hosts that do not reflect requests.
//   - Only values injected during the call are redacted; a server that
//     learnt a value another way and returns it unasked is not caught.
//   - After a redirect, a query template (from the server's Location) is
//     refused, never filled in; header templates (copied from the function's
//     request) are filled in only toward hosts their grant allows, otherwise
//     the redirect is refused. net/http drops Authorization and Cookie on a
//     redirect to another domain by itself.
//   - A name whose answers include one refused address is refused whole,
//     not filtered, so that a request's fate does not depend on the order of
//     the answers.
//   - '*' in a rule stands for exactly one label, as in TLS certificates.
//     IPv4 literals are accepted only as four decimal numbers; other forms
//     (2130706433, 0x7f.1, 017700000001, 127.1) are refused, naming the
//     address they stand for.
//   - An operator's --egress-allow-net applies to every function, and to
//     every user's fetch by hand. Never allow the networks of the pool
//     itself or of etcd.
//   - A fetch by hand is bounded per request (its Scope's budget, its time
//     and sizes); nothing here bounds how many requests a user makes.
//   - A call's Scope is dropped at the first request of any call after its
//     Done is closed; a resolver that gives no Done makes each request a
//     call of its own (a fresh budget each time).
//   - Connections are reused across calls for the same scheme, host and
//     port: the check is per connection, and a name's new answer applies to
//     new connections only.
package egress
