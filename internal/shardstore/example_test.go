package shardstore_test

import (
	"context"
	"errors"
	"fmt"
	"os"
	"strings"

	"github.com/hivemind/taskworker/internal/shardstore"
)

func Example() {
	dir, _ := os.MkdirTemp("", "shards")
	defer os.RemoveAll(dir)
	store, err := shardstore.Open(shardstore.DefaultConfig(dir))
	if err != nil {
		fmt.Println(err)
		return
	}
	defer store.Close()
	ctx := context.Background()

	k := shardstore.Key{FileID: "f7Qx", WriteID: "w1", Block: 0, Shard: 3}
	info, _ := store.Put(ctx, k, strings.NewReader("shard bytes"))
	data, _, _ := store.Get(ctx, k)
	fmt.Printf("%s: %d bytes, %q\n", info.Key, info.Size, data)

	_, err = store.Put(ctx, shardstore.Key{FileID: "../../etc", WriteID: "w1"}, strings.NewReader("x"))
	fmt.Println(errors.Is(err, shardstore.ErrInvalidKey))
	// Output:
	// f7Qx/w1/0.3: 11 bytes, "shard bytes"
	// true
}
