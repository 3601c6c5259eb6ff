// Package e2e tests the built taskworker binary as separate processes: a
// pool, workers and the CLI, killed with SIGKILL and restarted the way real
// machines fail. It has only tests; TestMain builds the binary once.
package e2e
