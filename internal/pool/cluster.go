package pool

import (
	"context"

	clientv3 "go.etcd.io/etcd/client/v3"

	"github.com/hivemind/taskworker/internal/auth"
)

// clusterID returns the network's identity, stored in etcd under
// <prefix>cluster/id and made by the first pool that starts on it. Workers
// record it in their data directories, so that a directory is never used by
// two networks: see docs/RATIONALE.md, "Why does a data directory belong to
// one network?".
func clusterID(ctx context.Context, cli *clientv3.Client, prefix string) (string, error) {
	key, id := prefix+"cluster/id", "tw-"+auth.NewSecret()[:26]
	txn, err := cli.Txn(ctx).
		If(clientv3.Compare(clientv3.CreateRevision(key), "=", 0)).
		Then(clientv3.OpPut(key, id)).
		Else(clientv3.OpGet(key)).
		Commit()
	if err != nil {
		return "", err
	}
	if txn.Succeeded {
		return id, nil
	}
	return string(txn.Responses[0].GetResponseRange().Kvs[0].Value), nil
}
