//go:build !race

package childproc

// raceAddressSpaceSlack widens a child's RLIMIT_AS in race-detector builds.
const raceAddressSpaceSlack = 0
