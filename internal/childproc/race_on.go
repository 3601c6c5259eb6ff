//go:build race

package childproc

// raceAddressSpaceSlack widens a child's RLIMIT_AS in race-detector builds
// (tests only), whose runtime maps shadow memory for the heap as it grows.
const raceAddressSpaceSlack = 2 * GiB
