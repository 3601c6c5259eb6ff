package guest_test

import (
	"context"
	"slices"
	"strings"
	"testing"
	"time"

	"google.golang.org/grpc/codes"
	"google.golang.org/grpc/status"

	"github.com/hivemind/taskworker"
	"github.com/hivemind/taskworker/internal/cluster"
	"github.com/hivemind/taskworker/internal/function/bindingtest"
	"github.com/hivemind/taskworker/internal/worker"
)

// kindCodes maps the table's error kinds to the gRPC codes a caller sees.
var kindCodes = map[string][]codes.Code{
	"":                          {codes.OK},
	bindingtest.InvalidArgument: {codes.InvalidArgument},
	bindingtest.FunctionError:   {codes.Unknown},
	// A native panic is Internal (the worker logs the stack); a guest's is
	// the guest's error.
	bindingtest.Panic: {codes.Internal, codes.Unknown},
}

// TestBindingTableThroughThePool runs the binding table through a real
// pool against both binders as they really run: each function registered
// natively on a worker, and deployed as a WebAssembly module built with the
// guest SDK. Every case must give the same bytes, or the same code with the
// same message, both ways.
func TestBindingTableThroughThePool(t *testing.T) {
	table, err := bindingtest.Load()
	if err != nil {
		t.Fatal(err)
	}
	wasm := cluster.BuildGuest(t, "./internal/function/bindingtest/guest")
	c := cluster.New(t, cluster.Options{Workers: 1, Sandbox: true, Setup: func(w *worker.Server) error {
		for name, fn := range bindingtest.Functions {
			if err := w.Register("native_"+name, fn, false); err != nil {
				return err
			}
		}
		return nil
	}})
	ctx, cancel := context.WithTimeout(context.Background(), 10*time.Minute)
	defer cancel()
	cl := c.Client(0)
	for name := range table.Functions {
		if _, err := cl.Deploy(ctx, "wasm_"+name, wasm, taskworker.DeploySpec{Export: name}); err != nil {
			t.Fatal(err)
		}
	}
	for _, kind := range []string{"native_", "wasm_"} {
		for _, tc := range table.Cases {
			t.Run(kind+tc.Name(), func(t *testing.T) {
				got, err := cl.CallJSON(ctx, kind+tc.Function, []byte(tc.Args))
				st := status.Convert(err)
				if !slices.Contains(kindCodes[tc.Error], st.Code()) || !strings.Contains(st.Message(), tc.Message) {
					t.Fatalf("got %s %q; want %v containing %q", st.Code(), st.Message(), kindCodes[tc.Error], tc.Message)
				}
				if err == nil && string(got) != tc.Result {
					t.Fatalf("result %q, want %q", got, tc.Result)
				}
			})
		}
	}
}
