package pool

import (
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"os"
	"path/filepath"
	"strings"
	"sync"
	"time"

	clientv3 "go.etcd.io/etcd/client/v3"
	"google.golang.org/grpc"
	"google.golang.org/grpc/codes"
	"google.golang.org/grpc/status"

	v1 "github.com/hivemind/taskworker/api/taskworker/v1"
	"github.com/hivemind/taskworker/internal/atomicfile"
	"github.com/hivemind/taskworker/internal/auth"
	"github.com/hivemind/taskworker/internal/names"
	"github.com/hivemind/taskworker/internal/serving"
)

// Files in the pool's data directory holding the bootstrap tokens.
const (
	AdminTokenFile = "admin.token"
	JoinTokenFile  = "join.token"
)

// tokenRecord is what etcd holds under tokens/<sha256 of the token>.
type tokenRecord struct {
	User        string  `json:"user"`
	Role        v1.Role `json:"role"`
	Description string  `json:"description,omitempty"`
	CreatedAt   int64   `json:"created_at_ms"`
}

// identity is who a request comes from, derived from its token.
type identity struct {
	User string
	Role v1.Role
}

type identityKey struct{}

func identityFrom(ctx context.Context) identity {
	id, _ := ctx.Value(identityKey{}).(identity)
	return id
}

// tokenStore answers "whose token is this?" from memory: it loads every
// token once and follows changes with a watch. A token not yet seen (created
// through another pool a moment ago) is looked up in etcd.
type tokenStore struct {
	cli    *clientv3.Client
	prefix string

	mu     sync.RWMutex
	byHash map[string]tokenRecord
}

func newTokenStore(cli *clientv3.Client, prefix string) *tokenStore {
	return &tokenStore{cli: cli, prefix: prefix + "tokens/", byHash: map[string]tokenRecord{}}
}

// run loads the tokens and follows changes until ctx ends. ready is closed
// after the first load.
func (s *tokenStore) run(ctx context.Context, ready chan<- struct{}) {
	watchPrefix(ctx, s.cli, s.prefix, func(kvs []kv, reset bool, _ int64) {
		s.mu.Lock()
		defer s.mu.Unlock()
		if reset {
			s.byHash = map[string]tokenRecord{}
		}
		for _, e := range kvs {
			hash := strings.TrimPrefix(e.key, s.prefix)
			if e.value == nil {
				delete(s.byHash, hash)
				continue
			}
			var rec tokenRecord
			if json.Unmarshal(e.value, &rec) == nil {
				s.byHash[hash] = rec
			}
		}
	}, ready)
}

func (s *tokenStore) lookup(ctx context.Context, token string) (tokenRecord, bool, error) {
	hash := auth.Hash(token)
	s.mu.RLock()
	rec, ok := s.byHash[hash]
	s.mu.RUnlock()
	if ok {
		return rec, true, nil
	}
	resp, err := s.cli.Get(ctx, s.prefix+hash, clientv3.WithSerializable())
	if err != nil {
		return tokenRecord{}, false, err
	}
	if len(resp.Kvs) == 0 {
		return tokenRecord{}, false, nil
	}
	if err := json.Unmarshal(resp.Kvs[0].Value, &rec); err != nil {
		return tokenRecord{}, false, err
	}
	return rec, true, nil
}

// create stores a new token for user and returns it.
func (s *tokenStore) create(ctx context.Context, user string, role v1.Role, description string) (string, error) {
	token := auth.NewToken()
	return token, s.put(ctx, token, tokenRecord{User: user, Role: role, Description: description, CreatedAt: time.Now().UnixMilli()})
}

func (s *tokenStore) put(ctx context.Context, token string, rec tokenRecord) error {
	b, err := json.Marshal(rec)
	if err != nil {
		return err
	}
	_, err = s.cli.Put(ctx, s.prefix+auth.Hash(token), string(b))
	return err
}

// bootstrap makes sure the token in dir/file exists and is known to etcd,
// creating it on first start. The file is readable by its owner only.
func (s *tokenStore) bootstrap(ctx context.Context, dir, file, user string, role v1.Role) (string, error) {
	path := filepath.Join(dir, file)
	b, err := os.ReadFile(path)
	token := strings.TrimSpace(string(b))
	switch {
	case err == nil:
		if err := auth.Validate(token); err != nil {
			return "", fmt.Errorf("%s: %w; delete the file to make a new one", path, err)
		}
	case errors.Is(err, os.ErrNotExist):
		token = auth.NewToken()
		if err := atomicfile.Write(path, []byte(token+"\n"), 0o600); err != nil {
			return "", err
		}
	default:
		return "", err
	}
	hash := s.prefix + auth.Hash(token)
	rec, _ := json.Marshal(tokenRecord{User: user, Role: role, Description: "bootstrap " + file, CreatedAt: time.Now().UnixMilli()})
	// Put only if absent, so a second pool over the same etcd keeps the record.
	_, err = s.cli.Txn(ctx).If(clientv3.Compare(clientv3.CreateRevision(hash), "=", 0)).
		Then(clientv3.OpPut(hash, string(rec))).Commit()
	return token, err
}

// authenticate derives the caller's identity from its token and checks,
// by internal/auth's table, that it may call method.
func (s *tokenStore) authenticate(ctx context.Context, method string) (context.Context, error) {
	if auth.Lookup(auth.Pool, method) == auth.Open {
		return ctx, nil
	}
	token, err := auth.FromIncoming(ctx)
	if err != nil {
		return nil, status.Error(codes.Unauthenticated, err.Error())
	}
	rec, ok, err := s.lookup(ctx, token)
	if err != nil {
		return nil, status.Errorf(codes.Unavailable, "checking the API token: %v", err)
	}
	if !ok {
		return nil, status.Error(codes.Unauthenticated, "API token not recognised: it was revoked or belongs to another network; ask the operator for a token (taskworker token create)")
	}
	if err := auth.Authorize(method, rec.Role); err != nil {
		return nil, err
	}
	return context.WithValue(ctx, identityKey{}, identity{User: rec.User, Role: rec.Role}), nil
}

func (s *tokenStore) unaryInterceptor(ctx context.Context, req any, info *grpc.UnaryServerInfo, handler grpc.UnaryHandler) (any, error) {
	ctx, err := s.authenticate(ctx, info.FullMethod)
	if err != nil {
		return nil, err
	}
	return handler(ctx, req)
}

func (s *tokenStore) streamInterceptor(srv any, ss grpc.ServerStream, info *grpc.StreamServerInfo, handler grpc.StreamHandler) error {
	ctx, err := s.authenticate(ss.Context(), info.FullMethod)
	if err != nil {
		return err
	}
	return handler(srv, &identityStream{ServerStream: ss, ctx: ctx})
}

type identityStream struct {
	grpc.ServerStream
	ctx context.Context
}

func (s *identityStream) Context() context.Context { return s.ctx }

// checkUser enforces that a request's user_id, where given, is the caller's
// own. Admins may act for any user. It returns the effective user.
func checkUser(ctx context.Context, userID string) (string, error) {
	id := identityFrom(ctx)
	if userID == "" || userID == id.User {
		return id.User, nil
	}
	if id.Role == v1.Role_ROLE_ADMIN {
		// The name keys the user's files and functions in etcd.
		if err := names.User(userID); err != nil {
			return "", status.Errorf(codes.InvalidArgument, "user_id: %v", err)
		}
		return userID, nil
	}
	return "", status.Errorf(codes.PermissionDenied, "user_id %q does not match the token's user %q; leave user_id empty or use that user's token", userID, id.User)
}

// redeemJoin checks a join token presented to enrol a new worker and
// records its use. It is the one place a join token is spent: its expiry
// and its count of uses are checked here.
func (s *tokenStore) redeemJoin(ctx context.Context, token string) (tokenRecord, error) {
	rec, ok, err := s.lookup(ctx, token)
	if err != nil {
		return tokenRecord{}, serving.EtcdError(err)
	}
	if !ok || rec.Role != v1.Role_ROLE_WORKER {
		return tokenRecord{}, status.Error(codes.Unauthenticated, "join token not recognised: it expired, was used up or revoked, or belongs to another network; ask the operator for one (taskworker token create --join)")
	}
	return rec, nil
}
