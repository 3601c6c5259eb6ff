package pool

// MaxConcurrentStreams is the pool's limit of streams on one connection.
const MaxConcurrentStreams = maxConcurrentStreams
