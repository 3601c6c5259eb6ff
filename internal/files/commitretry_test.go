package files

import (
	"bytes"
	"context"
	"path/filepath"
	"sync/atomic"
	"testing"
	"time"

	clientv3 "go.etcd.io/etcd/client/v3"
	"google.golang.org/grpc/codes"
	"google.golang.org/grpc/status"

	v1 "github.com/hivemind/taskworker/api/taskworker/v1"
	"github.com/hivemind/taskworker/internal/keyring"
	"github.com/hivemind/taskworker/internal/placement"
	"github.com/hivemind/taskworker/internal/serving"
)

// lossyKV loses the answer of its next transactions, as an etcd member
// that dies with a request in hand does: after applying it (applied) or
// before.
type lossyKV struct {
	clientv3.KV
	lose    atomic.Int32
	applied bool
}

func (k *lossyKV) Txn(ctx context.Context) clientv3.Txn { return lossyTxn{k.KV.Txn(ctx), k} }

type lossyTxn struct {
	clientv3.Txn
	kv *lossyKV
}

func (t lossyTxn) If(cs ...clientv3.Cmp) clientv3.Txn   { return lossyTxn{t.Txn.If(cs...), t.kv} }
func (t lossyTxn) Then(ops ...clientv3.Op) clientv3.Txn { return lossyTxn{t.Txn.Then(ops...), t.kv} }
func (t lossyTxn) Else(ops ...clientv3.Op) clientv3.Txn { return lossyTxn{t.Txn.Else(ops...), t.kv} }

func (t lossyTxn) Commit() (*clientv3.TxnResponse, error) {
	if t.kv.lose.Add(-1) < 0 {
		return t.Txn.Commit()
	}
	if t.kv.applied {
		if _, err := t.Txn.Commit(); err != nil {
			return nil, err
		}
	}
	return nil, status.Error(codes.Unavailable, "error reading from server: read tcp: connection reset by peer")
}

type noWorkers struct{}

func (noWorkers) StorageWorkers() []placement.Worker               { return nil }
func (noWorkers) Draining(string) bool                             { return false }
func (noWorkers) ShardClient(string) (v1.ShardServiceClient, bool) { return nil, false }

// A push and a revise whose commit's answer is lost succeed once, whether
// etcd applied the commit or not: the commit is sent again, and a resend
// refused because the first applied finds the write's own manifest.
func TestCommitWithALostAnswerIsSentAgain(t *testing.T) {
	for _, applied := range []bool{true, false} {
		cli := testEtcd(t)
		kv := &lossyKV{KV: cli.KV, applied: applied}
		cli.KV = kv
		keys, err := keyring.Open(filepath.Join(t.TempDir(), "master.keys"))
		if err != nil {
			t.Fatal(err)
		}
		cfg := DefaultConfig("/tw/")
		cfg.Keyring = keys
		s, err := New(cfg, cli, noWorkers{}, func(context.Context, string) (string, error) { return "alice", nil })
		if err != nil {
			t.Fatal(err)
		}
		ctx, cancel := context.WithTimeout(context.Background(), time.Minute)
		defer cancel()

		kv.lose.Store(1)
		pushed, err := s.Push(ctx, &v1.PushRequest{Filename: "a.txt", FileData: []byte("version 1")})
		if err != nil {
			t.Fatalf("applied %v: a push whose answer was lost: %v", applied, err)
		}
		id := pushed.Info.FileId
		kv.lose.Store(1)
		revised, err := s.Revise(ctx, &v1.ReviseRequest{FileId: id, FileData: []byte("version 2"), ExpectedVersion: 1})
		if err != nil || revised.Info.Version != 2 {
			t.Fatalf("applied %v: a revise whose answer was lost: %v, %v", applied, revised, err)
		}
		hist, err := s.FileHistory(ctx, &v1.FileHistoryRequest{FileId: id})
		if err != nil || len(hist.Versions) != 2 {
			t.Fatalf("applied %v: history %v, %v; want two versions", applied, hist, err)
		}
		if got, err := s.Get(ctx, &v1.GetRequest{FileId: id}); err != nil || !bytes.Equal(got.FileData, []byte("version 2")) {
			t.Fatalf("applied %v: get %v, %v", applied, got, err)
		}

		// Answers lost every time: the outcome stays unknown, and says so
		// (not marked not committed).
		kv.lose.Store(1 + maxAmbiguousRetries)
		_, err = s.Revise(ctx, &v1.ReviseRequest{FileId: id, FileData: []byte("version 3"), ExpectedVersion: 2})
		if status.Code(err) != codes.Unavailable || serving.IsNotCommitted(err) {
			t.Errorf("applied %v: every answer lost: %v", applied, err)
		}
	}
}
