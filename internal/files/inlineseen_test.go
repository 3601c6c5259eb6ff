package files

import (
	"slices"
	"testing"

	"go.etcd.io/etcd/api/v3/mvccpb"
)

func TestInlineSeenReadsAgainWhatChangedAndForgetsWhatIsGone(t *testing.T) {
	var c inlineSeen
	gen := c.begin()
	c.note("a", 10, -1)
	c.note("b", 11, 300)
	c.note("c", 12, 400)
	kvs := []*mvccpb.KeyValue{
		{Key: []byte("a"), ModRevision: 10}, // known, size not decoded
		{Key: []byte("b"), ModRevision: 13}, // written again since
		{Key: []byte("c"), ModRevision: 12}, // as seen
		{Key: []byte("d"), ModRevision: 14}, // new
	}
	gen = c.begin()
	sizes, need := c.lookup(kvs, false, gen)
	if want := []int64{-1, needValue, 400, needValue}; !slices.Equal(sizes, want) || len(need) != 2 || need[0] != "b" || need[1] != "d" {
		t.Fatalf("unsized lookup: %v, need %v", sizes, need)
	}
	if sizes, need = c.lookup(kvs, true, gen); sizes[0] != needValue || sizes[2] != 400 || len(need) != 3 {
		t.Fatalf("sized lookup: %v, need %v", sizes, need)
	}
	c.note("a", 10, 100)
	c.note("a", 10, -1) // an unsized scan keeps the size known
	if c.m["a"].size != 100 {
		t.Fatalf("size of a forgotten: %+v", c.m["a"])
	}
	// The next complete scan lists only c: a and b are gone.
	gen = c.begin()
	c.lookup(kvs[2:3], false, gen)
	c.prune(gen)
	if _, ok := c.m["c"]; len(c.m) != 1 || !ok {
		t.Fatalf("after prune: %v", c.m)
	}
}
