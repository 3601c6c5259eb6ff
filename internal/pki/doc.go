// Package pki is the network's identity: the cluster CA, the certificates
// it issues, and the TLS configurations that check them. Every connection
// of a network is TLS, and every node proves who it is with a certificate
// from the CA.
//
// There are a few types: [CA] (load or make, then Sign), [Holder] (a
// node's current certificate, renewed without a restart), [Identity] (who
// a certificate names) and [Verify] (how a client checks its server).
//
// Identities are SPIFFE-style URI SANs under the cluster id as trust
// domain: spiffe://<cluster>/pool for the pool, spiffe://<cluster>/worker/<id>
// for a worker ([PoolURI], [WorkerURI], [IdentityOf]). The pool's
// certificates also carry the common name [PoolCommonName], which the
// embedded etcd admits and nothing else does; workers' carry no common
// name at all. Keys are ECDSA P-256.
//
// Who holds what: the CA key stays in the pool's data directory (or with
// the operator, who gives it to each replica: docs/RATIONALE.md, "Why the
// CA key lives where it does"); a worker's key never leaves its data
// directory; etcd holds the CA certificate and the hashes of the keys bound
// to worker ids, nothing secret.
//
// # Caveats
//
//   - A certificate is checked when a connection is made; a connection
//     outlives its certificate's expiry. Revocation is checked on every call
//     by the pool (against the bindings in etcd) and at every handshake, so
//     a revoked worker is cut off at once regardless.
//   - The cluster id is the trust domain as it is, upper-case letters
//     included, which the SPIFFE specification does not allow: the URIs are
//     SPIFFE-style, not SPIFFE, and no SPIFFE library is needed to read them.
//   - Clients verify the pool themselves (ClientConfig's VerifyConnection)
//     instead of with Go's built-in check, so that a failure can name the CA
//     the client needs; the checks are the same (chain, key usage, name).
package pki
