// Package benchchart records benchmark measurements as JSON lines and draws
// them as scaling curves: PNG charts of throughput and latency against load,
// so a reader sees how cost grows, not a single point. `taskworker bench
// call --record` and `taskworker bench files --record` append to a record;
// `taskworker bench chart` draws it; scripts/bench-curves.sh runs the whole
// sweep on a fresh local network and writes docs/bench/.
//
// # Caveats
//
//   - A record holds whatever runs were appended to it; a sweep that is run
//     twice into one file draws both (the later point of a series wins at
//     the same x). Start from an empty file for a clean chart.
//   - The charts show one run each. Ratios between series of the same run
//     mean more than absolute figures on a shared machine.
package benchchart
