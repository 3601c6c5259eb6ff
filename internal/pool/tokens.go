package pool

import (
	"cmp"
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"os"
	"path/filepath"
	"slices"
	"strconv"
	"strings"
	"sync"
	"sync/atomic"
	"time"

	clientv3 "go.etcd.io/etcd/client/v3"
	"google.golang.org/grpc"
	"google.golang.org/grpc/codes"
	"google.golang.org/grpc/status"
	"google.golang.org/grpc/tap"

	v1 "github.com/hivemind/taskworker/api/taskworker/v1"
	"github.com/hivemind/taskworker/internal/atomicfile"
	"github.com/hivemind/taskworker/internal/auth"
	"github.com/hivemind/taskworker/internal/etcdwatch"
	"github.com/hivemind/taskworker/internal/names"
	"github.com/hivemind/taskworker/internal/serving"
)

// Files in the pool's data directory holding the bootstrap tokens.
const (
	AdminTokenFile = "admin.token"
	JoinTokenFile  = "join.token"
)

// What keeps callers without a valid token cheap (docs/RATIONALE.md, "Why
// are unknown tokens refused from the headers?").
const (
	// maxConcurrentStreams bounds the calls in flight on one connection;
	// a client that opens more waits for one to end (gRPC's flow control),
	// so one connection cannot hold an unbounded number of handlers.
	maxConcurrentStreams = 256
	// negativeTTL is how long a token that etcd does not know is answered
	// as unknown from memory; negativeMax bounds how many are remembered.
	negativeTTL = 10 * time.Second
	negativeMax = 4096
	// A token not in the watched map is looked up in etcd (it may have been
	// made through another pool a moment ago), at most missReadRate times a
	// second per pool with bursts of missReadBurst; beyond that it is
	// refused from memory.
	missReadRate  = 20
	missReadBurst = 20
	// useFlushInterval is how often a pool writes the last-use times of the
	// tokens used since: at most one etcd write per token and pool in each.
	useFlushInterval = time.Minute
	// maxTokenTTL bounds a token's lifetime as a creator may ask for it.
	maxTokenTTL = 100 * 365 * 24 * time.Hour
)

// tokenRecord is what etcd holds under tokens/<sha256 of the token>.
type tokenRecord struct {
	User        string  `json:"user"`
	Role        v1.Role `json:"role"`
	Description string  `json:"description,omitempty"`
	CreatedAt   int64   `json:"created_at_ms"`
	// ExpiresAt is Unix milliseconds; 0: never.
	ExpiresAt int64 `json:"expires_at_ms,omitempty"`
	// Uses counts the workers enrolled with a join token (redeemJoin);
	// MaxUses limits them (0: no limit).
	Uses    int64 `json:"uses,omitempty"`
	MaxUses int64 `json:"max_uses,omitempty"`
	// Bootstrap marks a pool's admin.token or join.token, whose revocation
	// leaves a tombstone so that the pool does not bring it back.
	Bootstrap bool `json:"bootstrap,omitempty"`
}

func (r tokenRecord) expired(now time.Time) bool {
	return r.ExpiresAt != 0 && now.UnixMilli() >= r.ExpiresAt
}

func (r tokenRecord) bootstrap() bool {
	// Records written before the field existed say so in their description.
	return r.Bootstrap || r.Description == "bootstrap "+AdminTokenFile || r.Description == "bootstrap "+JoinTokenFile
}

func (r tokenRecord) info(hash string, lastUsed int64) *v1.TokenInfo {
	return &v1.TokenInfo{Id: auth.ID(hash), User: r.User, Role: r.Role, Description: r.Description,
		CreatedAtMs: r.CreatedAt, ExpiresAtMs: r.ExpiresAt, LastUsedMs: lastUsed,
		Uses: r.Uses, MaxUses: r.MaxUses, Bootstrap: r.bootstrap()}
}

// identity is who a request comes from, derived from its token.
type identity struct {
	User string
	Role v1.Role
	// hash is the token's, expiresAt its expiry (Unix ms, 0: never): for
	// recording its use and cutting its streams when it ends; deletions is
	// the store's count of deleted tokens before it was looked up.
	hash      string
	expiresAt int64
	deletions uint64
}

type identityKey struct{}

func identityFrom(ctx context.Context) identity {
	id, _ := ctx.Value(identityKey{}).(identity)
	return id
}

// tokenStore answers "whose token is this?" from memory: it loads every
// token once and follows changes with a watch, so a revocation reaches every
// pool as fast as etcd's watch, and expiry is checked at each lookup. A
// token not in memory (made through another pool a moment ago) is looked up
// in etcd, within a rate, and remembered as unknown for a while if etcd
// does not know it either.
type tokenStore struct {
	cli *clientv3.Client // for the watch
	kv  clientv3.KV      // for reads and writes: cli, or a wrapper in tests
	// Keys: records, last-use times, tombstones of revoked bootstrap tokens.
	prefix, usePrefix, revokedPrefix string

	mu     sync.RWMutex
	byHash map[string]tokenRecord

	negMu   sync.Mutex
	unknown map[string]time.Time // hash -> until when it is answered unknown from memory
	misses  bucket               // etcd reads for tokens not in memory

	usedMu     sync.Mutex
	used       map[string]int64 // hash -> last use (Unix ms) not yet written
	flushEvery time.Duration

	streamsMu sync.Mutex
	streams   map[string]map[*liveStream]struct{} // hash -> the streams it authenticated
	// deletions counts the tokens the watch has deleted, so that a stream
	// can tell whether one went between its authentication and its
	// tracking, when cutting it would have missed it.
	deletions atomic.Uint64
}

// liveStream is a streaming call in progress, cut when its token goes.
type liveStream struct{ cancel context.CancelCauseFunc }

var (
	// errNotInMemory: the token needs an etcd read, which the caller may
	// not make (the tap runs in a connection's reader goroutine).
	errNotInMemory = errors.New("token not in the pool's memory")
	// errTokenRevoked and errTokenExpired end a stream whose token went.
	errTokenRevoked = errors.New("the API token was revoked")
	errTokenExpired = errors.New("the API token expired")
)

func newTokenStore(cli *clientv3.Client, prefix string) *tokenStore {
	return &tokenStore{
		cli: cli, kv: cli,
		prefix: prefix + "tokens/", usePrefix: prefix + "tokenuse/", revokedPrefix: prefix + "tokenrevoked/",
		byHash:     map[string]tokenRecord{},
		unknown:    map[string]time.Time{},
		misses:     bucket{rate: missReadRate, burst: missReadBurst, level: missReadBurst},
		used:       map[string]int64{},
		flushEvery: useFlushInterval,
		streams:    map[string]map[*liveStream]struct{}{},
	}
}

// run loads the tokens and follows changes, and writes last-use times,
// until ctx ends. ready is closed after the first load.
func (s *tokenStore) run(ctx context.Context, ready chan<- struct{}) {
	var wg sync.WaitGroup
	wg.Add(1)
	go func() {
		defer wg.Done()
		s.flushUses(ctx)
	}()
	etcdwatch.Prefix(ctx, s.cli, s.prefix, s.apply, ready)
	wg.Wait()
}

// apply updates the map from the watch and cuts the streams of tokens
// that were deleted.
func (s *tokenStore) apply(kvs []etcdwatch.KV, reset bool, _ int64) {
	s.mu.Lock()
	old := s.byHash
	if reset {
		s.byHash = map[string]tokenRecord{}
	}
	var gone []string
	for _, e := range kvs {
		hash := strings.TrimPrefix(e.Key, s.prefix)
		if e.Value == nil {
			delete(s.byHash, hash)
			gone = append(gone, hash)
			continue
		}
		var rec tokenRecord
		if json.Unmarshal(e.Value, &rec) == nil {
			s.byHash[hash] = rec
		}
	}
	if reset {
		for hash := range old {
			if _, ok := s.byHash[hash]; !ok {
				gone = append(gone, hash)
			}
		}
	}
	s.mu.Unlock()
	if len(gone) > 0 {
		s.deletions.Add(uint64(len(gone)))
		s.cutStreams(gone, errTokenRevoked)
	}
}

// lookup returns the record of the token whose hash is hash: from memory,
// or, if mayRead, from etcd. Without mayRead, a token that needs a read
// gets errNotInMemory. When etcd reads for unknown tokens are spent (a
// flood of bad tokens), the token is answered unknown from memory.
func (s *tokenStore) lookup(ctx context.Context, hash string, mayRead bool) (tokenRecord, bool, error) {
	s.mu.RLock()
	rec, ok := s.byHash[hash]
	s.mu.RUnlock()
	if ok {
		return rec, true, nil
	}
	now := time.Now()
	s.negMu.Lock()
	until, known := s.unknown[hash]
	if known && now.After(until) {
		delete(s.unknown, hash)
		known = false
	}
	s.negMu.Unlock()
	if known {
		return tokenRecord{}, false, nil
	}
	if !mayRead {
		if !s.misses.available(now) {
			return tokenRecord{}, false, nil
		}
		return tokenRecord{}, false, errNotInMemory
	}
	if !s.misses.take(now) {
		return tokenRecord{}, false, nil
	}
	// Linearizable: a serializable read from a lagging etcd member could
	// miss a token just made, which would then be remembered as unknown.
	resp, err := s.kv.Get(ctx, s.prefix+hash)
	if err != nil {
		return tokenRecord{}, false, err
	}
	if len(resp.Kvs) == 0 {
		s.rememberUnknown(hash, now)
		return tokenRecord{}, false, nil
	}
	if err := json.Unmarshal(resp.Kvs[0].Value, &rec); err != nil {
		return tokenRecord{}, false, fmt.Errorf("token record %s: %w", auth.ID(hash), err)
	}
	// Not put in the map: only the watch adds, so that a deletion it
	// delivers is never undone by a read that came before it.
	return rec, true, nil
}

// rememberUnknown records that etcd does not know hash. The map stays under
// negativeMax: expired entries go first, then arbitrary ones. A token made
// later is found anyway, since the watched map is asked first.
func (s *tokenStore) rememberUnknown(hash string, now time.Time) {
	s.negMu.Lock()
	defer s.negMu.Unlock()
	if len(s.unknown) >= negativeMax {
		for h, until := range s.unknown {
			if now.After(until) {
				delete(s.unknown, h)
			}
		}
		for h := range s.unknown {
			if len(s.unknown) < negativeMax/2 {
				break
			}
			delete(s.unknown, h)
		}
	}
	s.unknown[hash] = now.Add(negativeTTL)
}

// create stores a new token and returns it with its record.
func (s *tokenStore) create(ctx context.Context, user string, role v1.Role, description string, ttl time.Duration, maxUses int64) (string, tokenRecord, error) {
	token := auth.NewToken()
	now := time.Now()
	rec := tokenRecord{User: user, Role: role, Description: description, CreatedAt: now.UnixMilli(), MaxUses: maxUses}
	if ttl > 0 {
		rec.ExpiresAt = now.Add(ttl).UnixMilli()
	}
	b, err := json.Marshal(rec)
	if err != nil {
		return "", tokenRecord{}, err
	}
	_, err = s.kv.Put(ctx, s.prefix+auth.Hash(token), string(b))
	return token, rec, err
}

// bootstrap makes sure the token in dir/file exists and is known to etcd,
// creating it on first start. The file is readable by its owner only. A
// token that was revoked is not brought back: the operator deletes the file
// to make a new one.
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
	hash := auth.Hash(token)
	key, tombstone := s.prefix+hash, s.revokedPrefix+hash
	rec, _ := json.Marshal(tokenRecord{User: user, Role: role, Description: "bootstrap " + file, CreatedAt: time.Now().UnixMilli(), Bootstrap: true})
	// Put only if absent, so a second pool over the same etcd keeps the
	// record, and only if never revoked.
	resp, err := s.kv.Txn(ctx).
		If(clientv3.Compare(clientv3.CreateRevision(key), "=", 0), clientv3.Compare(clientv3.CreateRevision(tombstone), "=", 0)).
		Then(clientv3.OpPut(key, string(rec))).
		Else(clientv3.OpGet(tombstone)).Commit()
	if err != nil {
		return "", err
	}
	if !resp.Succeeded && len(resp.Responses[0].GetResponseRange().GetKvs()) > 0 {
		return "", fmt.Errorf("%s holds token %s, which was revoked (taskworker token revoke); delete the file and start the pool again to make a new one", path, auth.ID(hash))
	}
	return token, nil
}

// authenticate derives the caller's identity from its token and checks,
// by internal/auth's table, that it may call method. Without mayRead (in
// the tap) a token that needs an etcd read gets errNotInMemory.
func (s *tokenStore) authenticate(ctx context.Context, method string, mayRead bool) (context.Context, error) {
	if auth.Lookup(auth.Pool, method) == auth.Open {
		return ctx, nil
	}
	token, err := auth.FromIncoming(ctx)
	if err != nil {
		return nil, status.Error(codes.Unauthenticated, err.Error())
	}
	hash := auth.Hash(token)
	deletions := s.deletions.Load()
	rec, ok, err := s.lookup(ctx, hash, mayRead)
	switch {
	case errors.Is(err, errNotInMemory):
		return nil, err
	case err != nil:
		return nil, status.Errorf(codes.Unavailable, "checking the API token: %v", err)
	case !ok:
		return nil, status.Error(codes.Unauthenticated, "API token not recognised: it was revoked or belongs to another network (or was made in the last moments while the pool is refusing many unknown tokens: then try again); ask the operator for a token (taskworker token create)")
	}
	now := time.Now()
	if rec.expired(now) {
		return nil, status.Errorf(codes.Unauthenticated, "API token %s expired at %s; ask the operator for a new one (taskworker token create)",
			auth.ID(hash), time.UnixMilli(rec.ExpiresAt).UTC().Format(time.RFC3339))
	}
	if err := auth.Authorize(method, rec.Role); err != nil {
		return nil, err
	}
	s.noteUse(hash, now)
	return context.WithValue(ctx, identityKey{}, identity{User: rec.User, Role: rec.Role, hash: hash, expiresAt: rec.ExpiresAt, deletions: deletions}), nil
}

// tap authenticates a call from its headers, before gRPC reads its message,
// so that a caller with no token, a malformed, unknown, expired or
// insufficient one costs the pool no message read and no handler. It
// answers from memory only (it runs in the connection's reader goroutine):
// a token that needs an etcd read is left to the interceptors.
func (s *tokenStore) tap(ctx context.Context, info *tap.Info) (context.Context, error) {
	if auth.Lookup(auth.Pool, info.FullMethodName) == auth.WorkerCert {
		return ctx, nil // a worker's certificate, checked by the interceptor
	}
	authed, err := s.authenticate(ctx, info.FullMethodName, false)
	switch {
	case errors.Is(err, errNotInMemory):
		return ctx, nil
	case err != nil:
		return ctx, err
	}
	return authed, nil
}

// authenticated is authenticate for the interceptors: a call the tap has
// already authenticated carries its identity.
func (s *tokenStore) authenticated(ctx context.Context, method string) (context.Context, error) {
	if _, ok := ctx.Value(identityKey{}).(identity); ok {
		return ctx, nil
	}
	return s.authenticate(ctx, method, true)
}

func (s *tokenStore) unaryInterceptor(ctx context.Context, req any, info *grpc.UnaryServerInfo, handler grpc.UnaryHandler) (any, error) {
	ctx, err := s.authenticated(ctx, info.FullMethod)
	if err != nil {
		return nil, err
	}
	return handler(ctx, req)
}

// streamInterceptor authenticates a stream and cuts it when its token is
// revoked or expires, so that a watch or a download does not outlive the
// token that opened it.
func (s *tokenStore) streamInterceptor(srv any, ss grpc.ServerStream, info *grpc.StreamServerInfo, handler grpc.StreamHandler) error {
	ctx, err := s.authenticated(ss.Context(), info.FullMethod)
	if err != nil {
		return err
	}
	id, ok := ctx.Value(identityKey{}).(identity)
	if !ok { // an open method
		return handler(srv, ss)
	}
	ctx, cancel := context.WithCancelCause(ctx)
	defer cancel(nil)
	defer s.trackStream(id.hash, cancel)()
	if s.deletions.Load() != id.deletions {
		// A token was deleted since this one was looked up, perhaps this
		// one, before the stream was tracked: look again.
		if _, ok, err := s.lookup(ctx, id.hash, true); err == nil && !ok {
			return status.Errorf(codes.Unauthenticated, "API token %s was revoked; ask the operator for a token (taskworker token create)", auth.ID(id.hash))
		}
	}
	if id.expiresAt != 0 {
		t := time.AfterFunc(time.Until(time.UnixMilli(id.expiresAt)), func() { cancel(errTokenExpired) })
		defer t.Stop()
	}
	err = handler(srv, &identityStream{ServerStream: ss, ctx: ctx})
	switch cause := context.Cause(ctx); {
	case errors.Is(cause, errTokenRevoked):
		return status.Errorf(codes.Unauthenticated, "API token %s was revoked during the call; ask the operator for a token (taskworker token create)", auth.ID(id.hash))
	case errors.Is(cause, errTokenExpired):
		return status.Errorf(codes.Unauthenticated, "API token %s expired during the call; ask the operator for a new one (taskworker token create)", auth.ID(id.hash))
	}
	return err
}

// trackStream registers a stream of the token hash and returns its
// unregistration.
func (s *tokenStore) trackStream(hash string, cancel context.CancelCauseFunc) func() {
	ls := &liveStream{cancel: cancel}
	s.streamsMu.Lock()
	defer s.streamsMu.Unlock()
	if s.streams[hash] == nil {
		s.streams[hash] = map[*liveStream]struct{}{}
	}
	s.streams[hash][ls] = struct{}{}
	return func() {
		s.streamsMu.Lock()
		defer s.streamsMu.Unlock()
		delete(s.streams[hash], ls)
		if len(s.streams[hash]) == 0 {
			delete(s.streams, hash)
		}
	}
}

func (s *tokenStore) cutStreams(hashes []string, cause error) {
	if len(hashes) == 0 {
		return
	}
	s.streamsMu.Lock()
	defer s.streamsMu.Unlock()
	for _, hash := range hashes {
		for ls := range s.streams[hash] {
			ls.cancel(cause)
		}
	}
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
// and its count of uses are checked here, and the use is counted by a
// compare-and-swap on the record's revision, so that pools enrolling
// workers at the same moment never let more through than the count allows.
func (s *tokenStore) redeemJoin(ctx context.Context, token string) (tokenRecord, error) {
	notJoin := status.Error(codes.Unauthenticated, "join token not recognised: it was revoked, or belongs to another network; ask the operator for one (taskworker token create --join)")
	if err := auth.Validate(token); err != nil {
		return tokenRecord{}, status.Errorf(codes.Unauthenticated, "join token: %v", err)
	}
	hash := auth.Hash(token)
	key := s.prefix + hash
	// Memory first, so a flood of bad join tokens is not a flood of reads.
	if rec, ok, err := s.lookup(ctx, hash, true); err != nil {
		return tokenRecord{}, serving.EtcdError(err)
	} else if !ok || rec.Role != v1.Role_ROLE_WORKER {
		return tokenRecord{}, notJoin
	}
	for {
		resp, err := s.kv.Get(ctx, key)
		if err != nil {
			return tokenRecord{}, serving.EtcdError(err)
		}
		if len(resp.Kvs) == 0 {
			return tokenRecord{}, notJoin
		}
		var rec tokenRecord
		if err := json.Unmarshal(resp.Kvs[0].Value, &rec); err != nil {
			return tokenRecord{}, status.Errorf(codes.Internal, "join token %s: its record is unreadable: %v", auth.ID(hash), err)
		}
		now := time.Now()
		switch {
		case rec.Role != v1.Role_ROLE_WORKER:
			return tokenRecord{}, notJoin
		case rec.expired(now):
			return tokenRecord{}, status.Errorf(codes.Unauthenticated, "join token %s expired at %s; ask the operator for a new one (taskworker token create --join --ttl 1h)",
				auth.ID(hash), time.UnixMilli(rec.ExpiresAt).UTC().Format(time.RFC3339))
		case rec.MaxUses > 0 && rec.Uses >= rec.MaxUses:
			return tokenRecord{}, status.Errorf(codes.Unauthenticated, "join token %s is used up: %d of %d workers have enrolled with it; ask the operator for a new one (taskworker token create --join --uses N)",
				auth.ID(hash), rec.Uses, rec.MaxUses)
		}
		rec.Uses++
		b, err := json.Marshal(rec)
		if err != nil {
			return tokenRecord{}, status.Errorf(codes.Internal, "join token %s: %v", auth.ID(hash), err)
		}
		txn, err := s.kv.Txn(ctx).If(clientv3.Compare(clientv3.ModRevision(key), "=", resp.Kvs[0].ModRevision)).
			Then(clientv3.OpPut(key, string(b))).Commit()
		if err != nil {
			return tokenRecord{}, serving.EtcdError(err)
		}
		if txn.Succeeded {
			s.noteUse(hash, now)
			return rec, nil
		}
		// Another pool spent a use (or the record changed) meanwhile: read
		// it again.
	}
}

// noteUse records that the token hash was used. It costs a map write; the
// flusher writes it to etcd later.
func (s *tokenStore) noteUse(hash string, now time.Time) {
	s.usedMu.Lock()
	s.used[hash] = now.UnixMilli()
	s.usedMu.Unlock()
}

// flushUses writes the last-use times noted since its last round every
// flushEvery, and once more when ctx ends.
func (s *tokenStore) flushUses(ctx context.Context) {
	t := time.NewTicker(s.flushEvery)
	defer t.Stop()
	for {
		select {
		case <-ctx.Done():
			fctx, cancel := context.WithTimeout(context.Background(), 500*time.Millisecond)
			s.flushOnce(fctx)
			cancel()
			return
		case <-t.C:
			s.flushOnce(ctx)
		}
	}
}

// flushOnce writes each pending last-use time, for tokens that still exist
// (a use noted just before a revocation must not leave its time behind).
// What it could not write waits for the next round.
func (s *tokenStore) flushOnce(ctx context.Context) {
	s.usedMu.Lock()
	pending := s.used
	s.used = map[string]int64{}
	s.usedMu.Unlock()
	var failed map[string]int64
	for hash, ms := range pending {
		if failed == nil {
			_, err := s.kv.Txn(ctx).If(clientv3.Compare(clientv3.CreateRevision(s.prefix+hash), ">", 0)).
				Then(clientv3.OpPut(s.usePrefix+hash, strconv.FormatInt(ms, 10))).Commit()
			if err == nil {
				continue
			}
			failed = map[string]int64{}
		}
		failed[hash] = ms
	}
	if failed == nil {
		return
	}
	s.usedMu.Lock()
	for hash, ms := range failed {
		s.used[hash] = max(s.used[hash], ms)
	}
	s.usedMu.Unlock()
}

// list returns the tokens, of user if not empty, oldest first.
func (s *tokenStore) list(ctx context.Context, user string) ([]*v1.TokenInfo, error) {
	resp, err := s.kv.Txn(ctx).Then(
		clientv3.OpGet(s.prefix, clientv3.WithPrefix()),
		clientv3.OpGet(s.usePrefix, clientv3.WithPrefix()),
	).Commit()
	if err != nil {
		return nil, err
	}
	lastUsed := map[string]int64{}
	for _, e := range resp.Responses[1].GetResponseRange().GetKvs() {
		ms, _ := strconv.ParseInt(string(e.Value), 10, 64)
		lastUsed[strings.TrimPrefix(string(e.Key), s.usePrefix)] = ms
	}
	s.usedMu.Lock()
	for hash, ms := range s.used {
		lastUsed[hash] = max(lastUsed[hash], ms)
	}
	s.usedMu.Unlock()
	var out []*v1.TokenInfo
	for _, e := range resp.Responses[0].GetResponseRange().GetKvs() {
		var rec tokenRecord
		if json.Unmarshal(e.Value, &rec) != nil || (user != "" && rec.User != user) {
			continue
		}
		hash := strings.TrimPrefix(string(e.Key), s.prefix)
		out = append(out, rec.info(hash, lastUsed[hash]))
	}
	slices.SortFunc(out, func(a, b *v1.TokenInfo) int {
		return cmp.Or(cmp.Compare(a.CreatedAtMs, b.CreatedAtMs), strings.Compare(a.Id, b.Id))
	})
	return out, nil
}

// revoke deletes the token whose id is id, with its last-use time; a
// bootstrap token leaves a tombstone. Every pool's watch then drops it and
// cuts its streams. It returns the token as it was.
func (s *tokenStore) revoke(ctx context.Context, id string) (*v1.TokenInfo, error) {
	for {
		resp, err := s.kv.Get(ctx, s.prefix+id, clientv3.WithPrefix())
		if err != nil {
			return nil, serving.EtcdError(err)
		}
		switch len(resp.Kvs) {
		case 0:
			return nil, status.Errorf(codes.NotFound, "no token has id %s; 'taskworker token ls' lists them", id)
		case 1:
		default:
			return nil, status.Errorf(codes.FailedPrecondition, "id %s names %d tokens; revoke them by deleting their records under %s in etcd", id, len(resp.Kvs), s.prefix)
		}
		e := resp.Kvs[0]
		hash := strings.TrimPrefix(string(e.Key), s.prefix)
		var rec tokenRecord
		_ = json.Unmarshal(e.Value, &rec) // an unreadable record is revoked all the same
		ops := []clientv3.Op{clientv3.OpDelete(string(e.Key)), clientv3.OpDelete(s.usePrefix + hash)}
		if rec.bootstrap() {
			ops = append(ops, clientv3.OpPut(s.revokedPrefix+hash, strconv.FormatInt(time.Now().UnixMilli(), 10)))
		}
		txn, err := s.kv.Txn(ctx).If(clientv3.Compare(clientv3.ModRevision(string(e.Key)), "=", e.ModRevision)).Then(ops...).Commit()
		if err != nil {
			return nil, serving.EtcdError(err)
		}
		if !txn.Succeeded {
			continue // used or changed meanwhile: read it again
		}
		s.usedMu.Lock()
		delete(s.used, hash)
		s.usedMu.Unlock()
		return rec.info(hash, 0), nil
	}
}

func (s *adminService) CreateToken(ctx context.Context, req *v1.CreateTokenRequest) (*v1.CreateTokenResponse, error) {
	if err := names.User(req.User); err != nil {
		return nil, status.Error(codes.InvalidArgument, err.Error())
	}
	role := req.Role
	if role == v1.Role_ROLE_UNSPECIFIED {
		role = v1.Role_ROLE_USER
	}
	if _, ok := v1.Role_name[int32(role)]; !ok {
		return nil, status.Errorf(codes.InvalidArgument, "unknown role %d", role)
	}
	if err := auth.CheckReserved(req.User, role, req.Force); err != nil {
		return nil, status.Error(codes.InvalidArgument, err.Error())
	}
	if len(req.Description) > 1024 {
		return nil, status.Error(codes.InvalidArgument, "description is over 1024 bytes")
	}
	ttl := time.Duration(req.TtlMs) * time.Millisecond
	if req.TtlMs < 0 || req.TtlMs > maxTokenTTL.Milliseconds() {
		return nil, status.Errorf(codes.InvalidArgument, "ttl_ms %d: give 0 (no expiry) or up to %d (100 years)", req.TtlMs, maxTokenTTL.Milliseconds())
	}
	switch {
	case req.MaxUses < 0:
		return nil, status.Errorf(codes.InvalidArgument, "max_uses %d: give 0 (no limit) or a positive count", req.MaxUses)
	case req.MaxUses > 0 && role != v1.Role_ROLE_WORKER:
		return nil, status.Errorf(codes.InvalidArgument, "max_uses limits join tokens (role worker) only; a %s token is used by every call, so it takes an expiry (ttl) instead", auth.RoleName(role))
	}
	token, rec, err := s.tokens.create(ctx, req.User, role, req.Description, ttl, req.MaxUses)
	if err != nil {
		return nil, serving.EtcdError(err)
	}
	return &v1.CreateTokenResponse{Token: token, User: req.User, Role: role, Id: auth.ID(auth.Hash(token)), ExpiresAtMs: rec.ExpiresAt}, nil
}

func (s *adminService) ListTokens(ctx context.Context, req *v1.ListTokensRequest) (*v1.ListTokensResponse, error) {
	if req.User != "" {
		if err := names.User(req.User); err != nil {
			return nil, status.Error(codes.InvalidArgument, err.Error())
		}
	}
	tokens, err := s.tokens.list(ctx, req.User)
	if err != nil {
		return nil, serving.EtcdError(err)
	}
	return &v1.ListTokensResponse{Tokens: tokens}, nil
}

func (s *adminService) RevokeToken(ctx context.Context, req *v1.RevokeTokenRequest) (*v1.RevokeTokenResponse, error) {
	if err := auth.ValidateID(req.Id); err != nil {
		return nil, status.Error(codes.InvalidArgument, err.Error())
	}
	info, err := s.tokens.revoke(ctx, req.Id)
	if err != nil {
		return nil, err
	}
	return &v1.RevokeTokenResponse{Token: info}, nil
}

// bucket is a token bucket: at most burst at once, refilled at rate a
// second.
type bucket struct {
	mu          sync.Mutex
	rate, burst float64
	level       float64
	last        time.Time
}

func (b *bucket) refill(now time.Time) {
	if !b.last.IsZero() {
		b.level = min(b.burst, b.level+now.Sub(b.last).Seconds()*b.rate)
	}
	b.last = now
}

// available reports whether take would succeed now.
func (b *bucket) available(now time.Time) bool {
	b.mu.Lock()
	defer b.mu.Unlock()
	b.refill(now)
	return b.level >= 1
}

// take spends one unit if there is one.
func (b *bucket) take(now time.Time) bool {
	b.mu.Lock()
	defer b.mu.Unlock()
	b.refill(now)
	if b.level < 1 {
		return false
	}
	b.level--
	return true
}
