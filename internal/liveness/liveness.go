// Package liveness holds the gRPC keepalive settings every TaskWorker
// server and client uses, so that a peer that stops answering (stopped,
// swapped out, cut off) is found and its connection closed, instead of
// holding the streams on it forever.
//
// A connection that carries nothing for Time is pinged; one whose ping is
// not answered within Timeout is closed, and every stream on it fails:
// Send and Recv return, and the calls waiting on them end. Servers accept
// pings as often as every MinPingInterval, which clients never exceed.
//
// # Caveats
//
// Keepalive finds a dead connection, not a stuck program: a process whose
// HTTP/2 transport still answers pings, but whose handler stopped reading,
// keeps its connection. Callers are bounded there by their own deadlines
// (RATIONALE.md, "What bounds a call to a stalled worker?").
package liveness

import (
	"time"

	"google.golang.org/grpc"
	"google.golang.org/grpc/keepalive"
)

const (
	// Time is how long a connection may be silent before it is pinged.
	Time = 10 * time.Second
	// Timeout is how long a ping may go unanswered before the connection
	// is closed.
	Timeout = 5 * time.Second
	// MinPingInterval is the most often a server lets a client ping.
	MinPingInterval = 5 * time.Second
)

// ServerOptions ping silent clients and let clients ping.
func ServerOptions() []grpc.ServerOption {
	return []grpc.ServerOption{
		grpc.KeepaliveParams(keepalive.ServerParameters{Time: Time, Timeout: Timeout}),
		grpc.KeepaliveEnforcementPolicy(keepalive.EnforcementPolicy{MinTime: MinPingInterval, PermitWithoutStream: true}),
	}
}

// DialOption pings a silent server, also when no call is open (a node's
// long-lived connections to the pool and to workers).
func DialOption() grpc.DialOption {
	return grpc.WithKeepaliveParams(keepalive.ClientParameters{Time: Time, Timeout: Timeout, PermitWithoutStream: true})
}
