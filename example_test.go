package taskworker_test

import (
	"context"
	"encoding/json"
	"fmt"
	"log"
	"os"
	"time"

	"github.com/hivemind/taskworker"
	"github.com/hivemind/taskworker/internal/pool"
)

// The seed's basic setup: a worker with two functions, registered with a
// pool, called through it.
func Example() {
	ctx := context.Background()
	poolAddr, adminToken, joinToken, stop := startPool()
	defer stop()

	w, err := taskworker.New("worker_001", taskworker.WithPool(poolAddr, joinToken))
	if err != nil {
		log.Fatal(err)
	}
	_ = w.Function("hello", func() string { return "Hello from HiveMind!" })
	_ = w.Function("add", func(a, b int) int { return a + b }, taskworker.Idempotent())
	if err := w.Start(ctx, "127.0.0.1:0"); err != nil {
		log.Fatal(err)
	}
	defer w.Stop(ctx)
	waitForFunction(poolAddr, adminToken, "add")

	c, err := taskworker.Dial(poolAddr, taskworker.WithToken(adminToken))
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
	poolAddr, adminToken, joinToken, stop := startPool()
	defer stop()

	type order struct {
		Item     string
		Quantity int
	}
	w, _ := taskworker.New("worker_002", taskworker.WithPool(poolAddr, joinToken))
	_ = w.Function("process_data", func(ctx context.Context, o order) (map[string]any, error) {
		if o.Quantity <= 0 {
			return nil, fmt.Errorf("quantity %d: order at least one", o.Quantity)
		}
		return map[string]any{"processed": true, "result": o}, nil
	})
	_ = w.Start(ctx, "127.0.0.1:0")
	defer w.Stop(ctx)
	waitForFunction(poolAddr, adminToken, "process_data")

	c, _ := taskworker.Dial(poolAddr, taskworker.WithToken(adminToken))
	defer c.Close()
	out, _ := c.CallJSON(ctx, "process_data", []byte(`{"Item": "tea", "Quantity": 2}`))
	fmt.Println(string(out))
	_, err := c.CallJSON(ctx, "process_data", []byte(`{"Item": "tea"}`))
	fmt.Println(err)
	// Output:
	// {"processed":true,"result":{"Item":"tea","Quantity":2}}
	// rpc error: code = Unknown desc = process_data: quantity 0: order at least one
}

// startPool runs a pool with an embedded etcd in a temporary directory.
func startPool() (addr, adminToken, joinToken string, stop func()) {
	dir, err := os.MkdirTemp("", "taskworker-example-")
	if err != nil {
		log.Fatal(err)
	}
	cfg := pool.DefaultConfig(dir)
	cfg.Listen = "127.0.0.1:0"
	cfg.EtcdTickMs, cfg.EtcdElectionMs = 10, 100
	p, err := pool.New(cfg)
	if err != nil {
		log.Fatal(err)
	}
	if err := p.Start(context.Background()); err != nil {
		log.Fatal(err)
	}
	return p.Addr(), p.AdminToken(), p.JoinToken(), func() {
		_ = p.Stop(context.Background())
		os.RemoveAll(dir)
	}
}

// waitForFunction waits until the pool routes the function.
func waitForFunction(addr, token, name string) {
	c, _ := taskworker.Dial(addr, taskworker.WithToken(token))
	defer c.Close()
	for range 500 {
		fs, _ := c.Functions(context.Background())
		for _, f := range fs {
			if f.Name == name {
				return
			}
		}
		time.Sleep(10 * time.Millisecond)
	}
	log.Fatalf("function %s never became callable", name)
}

// The seed's file example: a worker's function stores what it is given and
// returns the file id; the caller reads the file back.
func ExampleWorker_Storage() {
	ctx := context.Background()
	poolAddr, adminToken, joinToken, stop := startPool()
	defer stop()
	dir, _ := os.MkdirTemp("", "taskworker-example-worker-")
	defer os.RemoveAll(dir)

	w, _ := taskworker.New("worker_003", taskworker.WithPool(poolAddr, joinToken),
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
	waitForFunction(poolAddr, adminToken, "save")

	c, _ := taskworker.Dial(poolAddr, taskworker.WithToken(adminToken))
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
