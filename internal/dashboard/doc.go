// Package dashboard is the network's picture for people: a snapshot of
// workers, functions, storage, repairs and tasks, collected through the
// pool's own gRPC API with the viewer's token, and the live web page that
// shows it.
//
// The page is plain HTML, CSS and JavaScript embedded in the binary. It asks
// for a token (or reads one from the URL fragment, which browsers never send
// to the server), then polls /api/snapshot with it as a bearer token. The
// handler forwards that token to the pool's API unchanged, so the page sees
// exactly what the token may see there: an admin sees everything, a user their
// own functions, tasks and quota, and the network's workers. `taskworker
// status` prints the same snapshot in a terminal.
//
// Calls per second and latency come from the process's Prometheus registry
// (the pool's call counters and histograms), sampled every few seconds into a
// short history that the page draws.
//
// # Caveats
//
//   - The handler is a client of the pool: it needs a connection to the pool's
//     gRPC address (with the cluster CA) and does one round of RPCs per
//     snapshot. A page polls every two seconds.
//   - Task counts come from one CountTasks, which reads at most 100,000 of
//     the user's records; beyond that they are shown as "at least".
//   - Call rates are network-wide, from the serving process's metrics; they
//     are shown to admins only.
package dashboard
