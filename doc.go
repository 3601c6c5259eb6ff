// Package taskworker is the Go library of TaskWorker, the execution layer of
// the HiveMind network: register Go functions on a worker, and call them from
// anywhere through the node pool.
//
// There are two types. A [Worker] serves functions:
//
//	w, _ := taskworker.New("worker_001", taskworker.WithPool("pool:50051", joinToken),
//		taskworker.WithPoolCAFile("ca.crt"), taskworker.WithDataDir("/var/lib/worker_001"))
//	w.Function("add", func(a, b int) int { return a + b }, taskworker.Idempotent())
//	w.Start(ctx, ":50052")
//	defer w.Stop(ctx)
//
// A [Client] calls them through the pool:
//
//	c, _ := taskworker.Dial("pool:50051", taskworker.WithToken(token), taskworker.WithCAFile("ca.crt"))
//	sum, _ := c.Call(ctx, "add", 1, 2) // json.RawMessage("3")
//
// Give [Dial] the addresses of several pool replicas, separated by commas
// ("pool1:50051,pool2:50051"), and it spreads calls over them and leaves
// out one that stops or dies: a rolling restart of the pools fails no
// call. A call that changes something is never sent twice by the client;
// [NotCarriedOut] tells an error after which it is safe to send it again.
//
// During a call, a function reads the secrets it is granted with [Secret]
// and reaches the outside with [Fetch], both carried out by the pool for
// that call (its only way out), with {{secret:NAME}} templates that put a
// key into a request without the function seeing it.
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
// Every connection is TLS, verified by the network's CA (ca.crt in the
// pool's data directory; `taskworker up` names it in TASKWORKER_CA). A
// client or worker without it fails with an error naming the CA it needs;
// WithInsecure and WithInsecurePool talk to a pool run with --insecure.
package taskworker
