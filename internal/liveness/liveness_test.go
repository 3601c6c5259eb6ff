package liveness

import "testing"

// A client pinging at Time must never be refused by a server's policy
// (gRPC closes the connection of a client that pings too often).
func TestClientsPingNoOftenerThanServersAllow(t *testing.T) {
	if Time < MinPingInterval {
		t.Fatalf("clients ping every %s, servers allow every %s at most", Time, MinPingInterval)
	}
	if Timeout <= 0 || Timeout > Time {
		t.Fatalf("ping timeout %s must be positive and at most the ping interval %s", Timeout, Time)
	}
}
