package starlarkrun_test

import (
	"context"
	"encoding/json"
	"fmt"
	"log"
	"os"
	"time"

	"github.com/hivemind/taskworker/internal/childproc"
	"github.com/hivemind/taskworker/internal/starlarkrun"
)

func Example() {
	// The children are this binary, run with ChildArg: its main (here, the
	// test's TestMain) calls starlarkrun.Main when it sees it.
	exe, err := os.Executable()
	if err != nil {
		log.Fatal(err)
	}
	cfg := starlarkrun.DefaultConfig()
	cfg.Command = []string{exe, starlarkrun.ChildArg}
	p, err := starlarkrun.New(cfg)
	if err != nil {
		log.Fatal(err)
	}
	defer p.Close()

	src := []byte("def add(a, b):\n    return a + b\n\ndef spin():\n    while True:\n        pass\n")
	if err := starlarkrun.Check("add.star", src, "add"); err != nil {
		log.Fatal(err) // at deploy time
	}
	ctx := context.Background()
	out, err := p.Call(ctx, starlarkrun.Request{Name: "add.star", Source: src, Function: "add", Args: json.RawMessage(`[1, 2]`)})
	fmt.Println(string(out), err)

	_, err = p.Call(ctx, starlarkrun.Request{Name: "add.star", Source: src, Function: "spin",
		Limits: starlarkrun.Limits{Timeout: 100 * time.Millisecond}})
	fmt.Println(childproc.GRPCCode(err))
	// Output:
	// 3 <nil>
	// DeadlineExceeded
}
