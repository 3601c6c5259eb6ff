package pool

import (
	"context"
	"crypto/x509"
	"encoding/json"
	"strings"
	"sync"
	"time"

	clientv3 "go.etcd.io/etcd/client/v3"
	"google.golang.org/grpc/codes"
	"google.golang.org/grpc/status"

	"github.com/hivemind/taskworker/internal/etcdwatch"
	"github.com/hivemind/taskworker/internal/pki"
	"github.com/hivemind/taskworker/internal/serving"
)

// binding is what etcd holds under identity/workers/<id>: the key a worker
// id is bound to. Only a certificate for this key is that worker.
type binding struct {
	Key        string `json:"key"` // pki.KeyHash of the worker's public key
	Ephemeral  bool   `json:"ephemeral,omitempty"`
	EnrolledAt int64  `json:"enrolled_at_ms"`
}

// revocation is what etcd holds under identity/revoked/<key hash>.
type revocation struct {
	WorkerID  string `json:"worker_id"`
	RevokedAt int64  `json:"revoked_at_ms"`
}

// identities binds worker ids to keys: the pool's answer to "is this
// certificate still that worker?". It follows etcd with a watch, so every
// check is a map lookup; a binding not yet seen (made through another pool
// a moment ago) is read from etcd.
type identities struct {
	cli    *clientv3.Client
	prefix string // <prefix>identity/
	// dropped is called with the id of a worker whose binding went away
	// (revoked): its connections are closed at once.
	dropped func(id string)

	mu       sync.RWMutex
	bindings map[string]binding
	revoked  map[string]revocation
}

func newIdentities(cli *clientv3.Client, prefix string) *identities {
	return &identities{cli: cli, prefix: prefix + "identity/", bindings: map[string]binding{}, revoked: map[string]revocation{},
		dropped: func(string) {}}
}

func (s *identities) bindingKey(id string) string  { return s.prefix + "workers/" + id }
func (s *identities) revokedKey(key string) string { return s.prefix + "revoked/" + key }

func (s *identities) run(ctx context.Context, ready chan<- struct{}) {
	etcdwatch.Prefix(ctx, s.cli, s.prefix, func(kvs []etcdwatch.KV, reset bool, _ int64) {
		var gone []string
		s.mu.Lock()
		if reset {
			for id := range s.bindings {
				gone = append(gone, id) // re-added below if still there
			}
			s.bindings, s.revoked = map[string]binding{}, map[string]revocation{}
		}
		for _, e := range kvs {
			rest := strings.TrimPrefix(e.Key, s.prefix)
			if id, ok := strings.CutPrefix(rest, "workers/"); ok {
				var b binding
				switch {
				case e.Value == nil:
					delete(s.bindings, id)
					gone = append(gone, id)
				case json.Unmarshal(e.Value, &b) == nil:
					s.bindings[id] = b
				}
			} else if key, ok := strings.CutPrefix(rest, "revoked/"); ok {
				var r revocation
				if e.Value != nil && json.Unmarshal(e.Value, &r) == nil {
					s.revoked[key] = r
				}
			}
		}
		var drop []string
		for _, id := range gone {
			if _, ok := s.bindings[id]; !ok {
				drop = append(drop, id)
			}
		}
		s.mu.Unlock()
		for _, id := range drop {
			s.dropped(id)
		}
	}, ready)
}

// check reports whether cert, verified by the CA, is the current
// certificate of the worker it names: its key is the one the id is bound
// to, and not revoked. The error is a status for the caller.
func (s *identities) check(ctx context.Context, id string, cert *x509.Certificate) error {
	key, err := pki.KeyHash(cert.PublicKey)
	if err != nil {
		return status.Errorf(codes.Unauthenticated, "worker %s: unreadable certificate key: %v", id, err)
	}
	s.mu.RLock()
	b, bound := s.bindings[id]
	_, revoked := s.revoked[key]
	s.mu.RUnlock()
	if revoked {
		return status.Errorf(codes.PermissionDenied, "worker %s: its certificate was revoked (taskworker workers revoke); enrol it again with a new key and a join token", id)
	}
	if !bound {
		if b, bound, err = s.read(ctx, id); err != nil {
			return serving.EtcdError(err)
		}
	}
	if !bound || b.Key != key {
		return status.Errorf(codes.PermissionDenied, "worker %s: this certificate's key is not the one the id is enrolled with (revoked, or replaced); enrol again with a join token", id)
	}
	return nil
}

func (s *identities) read(ctx context.Context, id string) (binding, bool, error) {
	resp, err := s.cli.Get(ctx, s.bindingKey(id))
	if err != nil || len(resp.Kvs) == 0 {
		return binding{}, false, err
	}
	var b binding
	if err := json.Unmarshal(resp.Kvs[0].Value, &b); err != nil {
		return binding{}, false, err
	}
	return b, true, nil
}

// isRevoked reports whether a key was revoked, from memory (for the TLS
// handshake, which cannot wait on etcd).
func (s *identities) isRevoked(key string) bool {
	s.mu.RLock()
	defer s.mu.RUnlock()
	_, ok := s.revoked[key]
	return ok
}

// bind binds id to key, or confirms it is. An id bound to another key is
// refused, unless that binding is ephemeral and its worker is not live
// (registered) now: see docs/RATIONALE.md, "Why is a worker id bound to a
// key?". workersKey is the id's registration record.
func (s *identities) bind(ctx context.Context, id, key string, ephemeral bool, workersKey string) error {
	resp, err := s.cli.Get(ctx, s.revokedKey(key), clientv3.WithCountOnly())
	if err != nil {
		return serving.EtcdError(err)
	}
	if resp.Count > 0 {
		return status.Errorf(codes.PermissionDenied, "worker %s: this key was revoked; make a new one (remove the worker's identity directory, <data-dir>/identity) and enrol with a join token", id)
	}
	rec, _ := json.Marshal(binding{Key: key, Ephemeral: ephemeral, EnrolledAt: time.Now().UnixMilli()})
	bkey := s.bindingKey(id)
	for range 3 { // retried only when a concurrent enrolment moved the record
		txn, err := s.cli.Txn(ctx).
			If(clientv3.Compare(clientv3.CreateRevision(bkey), "=", 0)).
			Then(clientv3.OpPut(bkey, string(rec))).
			Else(clientv3.OpGet(bkey), clientv3.OpGet(workersKey, clientv3.WithCountOnly())).
			Commit()
		if err != nil {
			return serving.EtcdError(err)
		}
		if txn.Succeeded {
			return nil
		}
		kvs := txn.Responses[0].GetResponseRange().Kvs
		if len(kvs) == 0 {
			continue
		}
		var old binding
		if err := json.Unmarshal(kvs[0].Value, &old); err != nil {
			return status.Errorf(codes.Internal, "worker %s: unreadable identity record: %v", id, err)
		}
		if old.Key == key {
			return nil
		}
		live := txn.Responses[1].GetResponseRange().Count > 0
		if !old.Ephemeral || live {
			return status.Errorf(codes.AlreadyExists, "worker id %q is enrolled with another key%s; give this worker another --id, or, if that worker is gone for good, free the id with: taskworker workers revoke %s",
				id, map[bool]string{true: " and that worker is live", false: ""}[live], id)
		}
		// An ephemeral binding whose worker is gone: taken over, unless
		// the binding or the registration changed meanwhile.
		txn, err = s.cli.Txn(ctx).
			If(clientv3.Compare(clientv3.ModRevision(bkey), "=", kvs[0].ModRevision),
				clientv3.Compare(clientv3.CreateRevision(workersKey), "=", 0)).
			Then(clientv3.OpPut(bkey, string(rec))).
			Commit()
		if err != nil {
			return serving.EtcdError(err)
		}
		if txn.Succeeded {
			return nil
		}
	}
	return status.Errorf(codes.Aborted, "worker %s: enrolments of this id raced; try again", id)
}

// revoke revokes the key id is bound to and frees the id; the worker's
// registration goes with it. It reports whether id was bound.
func (s *identities) revoke(ctx context.Context, id, workersKey string) (bool, error) {
	b, ok, err := s.read(ctx, id)
	if err != nil {
		return false, serving.EtcdError(err)
	}
	if !ok {
		return false, nil
	}
	rec, _ := json.Marshal(revocation{WorkerID: id, RevokedAt: time.Now().UnixMilli()})
	_, err = s.cli.Txn(ctx).Then(
		clientv3.OpPut(s.revokedKey(b.Key), string(rec)),
		clientv3.OpDelete(s.bindingKey(id)),
		clientv3.OpDelete(workersKey),
	).Commit()
	if err != nil {
		return false, serving.EtcdError(err)
	}
	return true, nil
}
