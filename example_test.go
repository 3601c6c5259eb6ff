package taskworker_test

import (
	"context"
	"encoding/json"
	"fmt"
	"log"
	"os"

	"google.golang.org/grpc/codes"
	"google.golang.org/grpc/status"

	"github.com/hivemind/taskworker"
)

// A worker with two functions, registered with a pool, called through it.
// (startPool, in network_test.go, stands for a network that `taskworker up`
// would run: it gives the pool's address and its admin and join tokens.)
func Example() {
	ctx := context.Background()
	poolAddr, adminToken, joinToken, ca, stop := startPool()
	defer stop()

	w, err := taskworker.New("worker_001", taskworker.WithPool(poolAddr, joinToken), taskworker.WithPoolCA(ca))
	if err != nil {
		log.Fatal(err)
	}
	_ = w.Function("hello", func() string { return "Hello from HiveMind!" })
	_ = w.Function("add", func(a, b int) int { return a + b }, taskworker.Idempotent())
	if err := w.Start(ctx, "127.0.0.1:0"); err != nil {
		log.Fatal(err)
	}
	defer w.Stop(ctx)
	waitForFunction(poolAddr, adminToken, ca, "add")

	c, err := taskworker.Dial(poolAddr, taskworker.WithToken(adminToken), taskworker.WithCA(ca))
	if err != nil {
		log.Fatal(err)
	}
	defer c.Close()
	sum, err := c.Call(ctx, "add", 1, 2)
	if err != nil {
		log.Fatal(err)
	}
	hello, _ := c.Call(ctx, "hello")
	fmt.Println(string(sum), string(hello))
	// Output: 3 "Hello from HiveMind!"
}

// A function taking one struct accepts a JSON object, and may take the
// caller's context and return an error.
func ExampleWorker_Function() {
	ctx := context.Background()
	poolAddr, adminToken, joinToken, ca, stop := startPool()
	defer stop()

	type order struct {
		Item     string
		Quantity int
	}
	w, _ := taskworker.New("worker_002", taskworker.WithPool(poolAddr, joinToken), taskworker.WithPoolCA(ca))
	_ = w.Function("process_data", func(ctx context.Context, o order) (map[string]any, error) {
		if o.Quantity <= 0 {
			return nil, fmt.Errorf("quantity %d: order at least one", o.Quantity)
		}
		return map[string]any{"processed": true, "result": o}, nil
	})
	_ = w.Start(ctx, "127.0.0.1:0")
	defer w.Stop(ctx)
	waitForFunction(poolAddr, adminToken, ca, "process_data")

	c, _ := taskworker.Dial(poolAddr, taskworker.WithToken(adminToken), taskworker.WithCA(ca))
	defer c.Close()
	out, _ := c.CallJSON(ctx, "process_data", []byte(`{"Item": "tea", "Quantity": 2}`))
	fmt.Println(string(out))
	_, err := c.CallJSON(ctx, "process_data", []byte(`{"Item": "tea"}`))
	fmt.Println(err)
	// Output:
	// {"processed":true,"result":{"Item":"tea","Quantity":2}}
	// rpc error: code = Unknown desc = process_data: quantity 0: order at least one
}

// A worker's function stores what it is given and returns the file id; the
// caller reads the file back.
func ExampleWorker_Storage() {
	ctx := context.Background()
	poolAddr, adminToken, joinToken, ca, stop := startPool()
	defer stop()
	dir, _ := os.MkdirTemp("", "taskworker-example-worker-")
	defer os.RemoveAll(dir)

	w, _ := taskworker.New("worker_003", taskworker.WithPool(poolAddr, joinToken), taskworker.WithPoolCA(ca),
		taskworker.WithDataDir(dir), taskworker.WithStorageToken(adminToken))
	_ = w.Function("save", func(ctx context.Context, name, text string) (string, error) {
		storage, err := w.Storage()
		if err != nil {
			return "", err
		}
		info, err := storage.Push(ctx, name, []byte(text))
		if err != nil {
			return "", err
		}
		return info.FileId, nil
	})
	_ = w.Start(ctx, "127.0.0.1:0")
	defer w.Stop(ctx)
	waitForFunction(poolAddr, adminToken, ca, "save")

	c, _ := taskworker.Dial(poolAddr, taskworker.WithToken(adminToken), taskworker.WithCA(ca))
	defer c.Close()
	out, err := c.Call(ctx, "save", "data.txt", "Hello from HiveMind!")
	if err != nil {
		log.Fatal(err)
	}
	var fileID string
	_ = json.Unmarshal(out, &fileID)
	data, _ := c.Get(ctx, fileID)
	fmt.Println(string(data))
	// Output: Hello from HiveMind!
}

// A function's error reaches the caller with the gRPC code it carries:
// Errorf (or status.Error) picks it; a plain error arrives as Unknown.
func ExampleErrorf() {
	ctx := context.Background()
	poolAddr, adminToken, joinToken, ca, stop := startPool()
	defer stop()

	prices := map[string]int{"tea": 3}
	w, _ := taskworker.New("worker_004", taskworker.WithPool(poolAddr, joinToken), taskworker.WithPoolCA(ca))
	_ = w.Function("price", func(item string) (int, error) {
		p, ok := prices[item]
		if !ok {
			return 0, taskworker.Errorf(codes.NotFound, "no price for %q; ask for one of %d items", item, len(prices))
		}
		return p, nil
	})
	_ = w.Start(ctx, "127.0.0.1:0")
	defer w.Stop(ctx)
	waitForFunction(poolAddr, adminToken, ca, "price")

	c, _ := taskworker.Dial(poolAddr, taskworker.WithToken(adminToken), taskworker.WithCA(ca))
	defer c.Close()
	p, _ := c.Call(ctx, "price", "tea")
	fmt.Println(string(p))
	_, err := c.Call(ctx, "price", "gold")
	fmt.Println(status.Code(err), status.Convert(err).Message())
	// Output:
	// 3
	// NotFound no price for "gold"; ask for one of 1 items
}

// A client of several pool replicas takes their addresses separated by
// commas, and spreads its calls over those that answer. (127.0.0.1:1 stands
// for a replica that is down.) A list it cannot use is refused at once.
func ExampleDial_severalPools() {
	poolAddr, adminToken, _, ca, stop := startPool()
	defer stop()

	c, err := taskworker.Dial("127.0.0.1:1,"+poolAddr, taskworker.WithToken(adminToken), taskworker.WithCA(ca))
	if err != nil {
		log.Fatal(err)
	}
	defer c.Close()
	failed := 0
	for range 10 {
		if _, err := c.Workers(context.Background()); err != nil {
			failed++
		}
	}
	fmt.Println(len(c.Pools()), "pools,", failed, "of 10 calls failed")

	_, err = taskworker.Dial("10.0.0.1:50051,,10.0.0.2:50051", taskworker.WithToken(adminToken))
	fmt.Println(err)
	// Output:
	// 2 pools, 0 of 10 calls failed
	// pool address list "10.0.0.1:50051,,10.0.0.2:50051": entry 2 is empty; separate host:port addresses by single commas
}
