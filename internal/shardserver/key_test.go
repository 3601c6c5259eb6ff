package shardserver_test

import (
	"errors"
	"fmt"
	"testing"

	"google.golang.org/protobuf/proto"

	v1 "github.com/hivemind/taskworker/api/taskworker/v1"
	"github.com/hivemind/taskworker/internal/shardserver"
	"github.com/hivemind/taskworker/internal/shardstore"
)

func ExampleKeyFromProto() {
	k, err := shardserver.KeyFromProto(&v1.ShardKey{FileId: "f7Qx", WriteId: "w1", Block: 2, Shard: 5})
	fmt.Println(k, err)
	_, err = shardserver.KeyFromProto(&v1.ShardKey{FileId: "../etc", WriteId: "w1"})
	fmt.Println(errors.Is(err, shardstore.ErrInvalidKey))
	// Output:
	// f7Qx/w1/2.5 <nil>
	// true
}

// FuzzKeyFromProto: every key off the wire is either rejected as invalid or valid and converts back to
// itself.
func FuzzKeyFromProto(f *testing.F) {
	f.Add("f1", "w1", int64(0), int32(0))
	f.Add("../x", "w1", int64(1), int32(2))
	f.Add("f1", "w/1", int64(-1), int32(256))
	f.Add("", "", int64(0), int32(-1))
	f.Fuzz(func(t *testing.T, file, write string, block int64, shard int32) {
		p := &v1.ShardKey{FileId: file, WriteId: write, Block: block, Shard: shard}
		k, err := shardserver.KeyFromProto(p)
		if err != nil {
			if !errors.Is(err, shardstore.ErrInvalidKey) {
				t.Fatalf("%v: error %v does not wrap ErrInvalidKey", p, err)
			}
			return
		}
		if err := k.Validate(); err != nil {
			t.Fatalf("%v accepted as %v, which the store rejects: %v", p, k, err)
		}
		if back := shardserver.KeyToProto(k); !proto.Equal(back, p) {
			t.Fatalf("%v converts back to %v", p, back)
		}
	})
}
