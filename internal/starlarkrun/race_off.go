//go:build !race

package starlarkrun

// raceAddressSpaceSlack widens a child's RLIMIT_AS in race-detector builds.
const raceAddressSpaceSlack = 0
