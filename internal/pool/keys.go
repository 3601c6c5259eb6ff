package pool

import (
	"context"
	"fmt"
	"slices"

	clientv3 "go.etcd.io/etcd/client/v3"

	"github.com/hivemind/taskworker/internal/keyring"
)

// The network's newest master key is recorded in etcd, so that a replica
// started with another key file (its own, made on first start, instead of
// a copy of the network's) refuses to start, rather than serve and fail
// every read of what the network's key wraps.
func keyRecordKey(prefix string) string { return prefix + "keyring/current" }

// checkKeyring records ring's current master key as the network's if none
// is, and otherwise requires ring to hold the recorded one.
func checkKeyring(ctx context.Context, cli *clientv3.Client, prefix string, ring *keyring.Keyring) error {
	key := keyRecordKey(prefix)
	tx, err := cli.Txn(ctx).If(clientv3.Compare(clientv3.CreateRevision(key), "=", 0)).
		Then(clientv3.OpPut(key, ring.Current())).Else(clientv3.OpGet(key)).Commit()
	if err != nil {
		return fmt.Errorf("recording the network's master key: %w", err)
	}
	if tx.Succeeded {
		return nil
	}
	kvs := tx.Responses[0].GetResponseRange().Kvs
	if len(kvs) == 0 {
		return nil
	}
	if want := string(kvs[0].Value); !slices.Contains(ring.IDs(), want) {
		return fmt.Errorf("the network's data keys are wrapped by master key %s, which the key file %s does not hold: give every pool replica the same key file (--key-file), copied from the replica that made it or rotated it last", want, ring.Path())
	}
	return nil
}

// keyRecord records the current master key after a rotation (it is the
// first "store" KeyService rewraps), so that replicas started later check
// against it.
type keyRecord struct {
	cli    *clientv3.Client
	prefix string
	ring   *keyring.Keyring
}

func (k keyRecord) RewrapKeys(ctx context.Context) (int, error) {
	if _, err := k.cli.Put(ctx, keyRecordKey(k.prefix), k.ring.Current()); err != nil {
		return 0, fmt.Errorf("recording the new master key: %w", err)
	}
	return 0, nil
}
