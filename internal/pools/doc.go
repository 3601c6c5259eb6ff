// Package pools turns a pool address, or a comma-separated list of the
// addresses of several pool replicas ("10.0.0.1:50051,10.0.0.2:50051"),
// into a gRPC target and dial options: one address dials as before (its
// name resolved by DNS); several are a static list that round_robin
// spreads calls over, leaving out a pool that stops or dies until it
// answers again. Clients (package taskworker, the CLI) and workers share
// it, so every program that talks to pools takes the same list.
//
// Calls a pool never began (its connection was refused, or it was
// stopping and turned the stream away) are retried on another pool by gRPC
// itself. Calls a pool may have begun are retried only where doing them
// twice is harmless: the read-only methods in ReadOnly, when the pool
// answers Unavailable.
//
// # Caveats
//
// The list is static: a replica added later needs a new client. A name in
// the list is resolved when its connection is made, to its first address;
// list replicas by address, or put one name of several addresses alone.
package pools
