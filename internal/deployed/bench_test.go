package deployed_test

import (
	"context"
	"testing"

	taskworker "github.com/hivemind/taskworker"
	"github.com/hivemind/taskworker/internal/cluster"
)

// BenchmarkCall is a call through the pool, one at a time, of the native
// add and of the same function deployed as a Go guest, in child processes
// and in the worker's process: what sandboxing adds end to end, everything
// in this process over loopback TCP.
func BenchmarkCall(b *testing.B) {
	wasm := guest(b, "./examples/go-add")
	for _, mode := range []struct {
		name    string
		command []string
	}{{"child-process", wasmCommand}, {"in-process", nil}} {
		b.Run(mode.name, func(b *testing.B) {
			c := cluster.New(b, cluster.Options{Workers: 1, Sandbox: true, WasmCache: wasmCache, WasmCommand: mode.command})
			cl := c.Client(0)
			ctx := context.Background()
			if _, err := cl.Deploy(ctx, "wadd", wasm, taskworker.DeploySpec{Export: "add"}); err != nil {
				b.Fatal(err)
			}
			for _, fn := range []string{"add", "wadd"} {
				b.Run(fn, func(b *testing.B) {
					args := []byte("[1, 2]")
					if _, err := cl.CallJSON(ctx, fn, args); err != nil { // loads it
						b.Fatal(err)
					}
					for b.Loop() {
						if _, err := cl.CallJSON(ctx, fn, args); err != nil {
							b.Fatal(err)
						}
					}
				})
			}
		})
	}
}
