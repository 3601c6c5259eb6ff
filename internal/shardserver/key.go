package shardserver

import (
	"fmt"

	v1 "github.com/hivemind/taskworker/api/taskworker/v1"
	"github.com/hivemind/taskworker/internal/shardstore"
)

// KeyToProto converts a store key to its wire form.
func KeyToProto(k shardstore.Key) *v1.ShardKey {
	return &v1.ShardKey{FileId: k.FileID, WriteId: k.WriteID, Block: k.Block, Shard: int32(k.Shard)}
}

// KeyFromProto converts a wire key to a store key and validates it: the error wraps
// shardstore.ErrInvalidKey and says which field is wrong. A nil key is invalid.
func KeyFromProto(p *v1.ShardKey) (shardstore.Key, error) {
	if p == nil {
		return shardstore.Key{}, fmt.Errorf("%w: no shard key given; set file_id, write_id, block and shard", shardstore.ErrInvalidKey)
	}
	k := shardstore.Key{FileID: p.GetFileId(), WriteID: p.GetWriteId(), Block: p.GetBlock(), Shard: int(p.GetShard())}
	if err := k.Validate(); err != nil {
		return shardstore.Key{}, err
	}
	return k, nil
}

// KeysToProto converts store keys to their wire form, as RegistryService.ReportDamage takes them.
func KeysToProto(ks []shardstore.Key) []*v1.ShardKey {
	out := make([]*v1.ShardKey, len(ks))
	for i, k := range ks {
		out[i] = KeyToProto(k)
	}
	return out
}
