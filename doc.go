// Package taskworker is the Go library of TaskWorker, the execution layer of
// the HiveMind network: register Go functions on a worker, and call them from
// anywhere through the node pool.
//
// There are two types. A [Worker] serves functions:
//
//	w, _ := taskworker.New("worker_001", taskworker.WithPool("pool:50051", joinToken))
//	w.Function("add", func(a, b int) int { return a + b }, taskworker.Idempotent())
//	w.Start(ctx, ":50052")
//	defer w.Stop(ctx)
//
// A [Client] calls them through the pool:
//
//	c, _ := taskworker.Dial("pool:50051", taskworker.WithToken(token))
//	sum, _ := c.Call(ctx, "add", 1, 2) // json.RawMessage("3")
//
// A function's error reaches the caller as a gRPC status: [Errorf] (or
// status.Error) chooses its code; any other error arrives as Unknown.
//
// The gRPC API itself is in package
// github.com/hivemind/taskworker/api/taskworker/v1, for clients in other
// languages.
//
// # Caveats
//
// Connections are not yet encrypted (mTLS between nodes and TLS for clients
// land with the security work): run networks on a trusted network.
package taskworker
