package taskworker_test

import (
	"context"
	"log"
	"os"
	"time"

	"github.com/hivemind/taskworker"
	"github.com/hivemind/taskworker/internal/pool"
)

// The examples need a network. A program using the library gets one from
// `taskworker up` (or a deployed pool); the examples start a pool in
// process, here, so that they run as tests.

// startPool runs a pool with an embedded etcd in a temporary directory. ca
// is the network's CA certificate, which workers and clients verify the
// pool with (`taskworker up` writes it to a file, TASKWORKER_CA).
func startPool() (addr, adminToken, joinToken string, ca []byte, stop func()) {
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
	return p.Addr(), p.AdminToken(), p.JoinToken(), p.CACertPEM(), func() {
		_ = p.Stop(context.Background())
		os.RemoveAll(dir)
	}
}

// waitForFunction waits until the pool routes the function.
func waitForFunction(addr, token string, ca []byte, name string) {
	c, _ := taskworker.Dial(addr, taskworker.WithToken(token), taskworker.WithCA(ca))
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
