package sandbox

import (
	"context"
	"fmt"
	"log/slog"
	"os"
	"path/filepath"
	"time"

	"github.com/hivemind/taskworker/internal/childproc"
)

// A worker loads a deployed module once and calls it many times. Here the
// module is Extism's count_vowels test plugin (written in Rust), read from
// the go-sdk module.
func ExampleRuntime_Load() {
	ctx := context.Background()
	rt, err := NewRuntime(ctx, DefaultConfig())
	if err != nil {
		panic(err)
	}
	defer rt.Close(ctx)

	dir, _ := extismDir()
	wasm, err := os.ReadFile(filepath.Join(dir, "wasm", "count_vowels.wasm"))
	if err != nil {
		panic(err)
	}
	spec := Spec{Export: "count_vowels", Limits: Limits{Memory: 16 * MiB, Timeout: time.Second}}
	m, err := rt.Load(ctx, wasm, spec, SlogHost{Logger: slog.Default()})
	if err != nil {
		panic(err)
	}
	out, err := m.Call(ctx, []byte("Hello, World"))
	if err != nil {
		st := childproc.GRPCStatus(err) // what the caller of CallFunction sees
		fmt.Println(st.Code(), st.Message())
		return
	}
	fmt.Println(string(out))
	// Output: {"count":3,"total":3,"vowels":"aeiouAEIOU"}
}
