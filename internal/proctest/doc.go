// Package proctest runs taskworker processes for internal/e2e and
// internal/chaos: Build builds the binary once, Process is a child process
// that can be started, signalled, SIGKILLed and started again with the same
// arguments, FreeAddr picks a TCP address to tell a process to listen on.
//
// # Caveats
//
// FreeAddr closes the port before returning it, so another process may take
// it first. A Process dies with its parent (Pdeathsig), which is Linux-only.
package proctest
