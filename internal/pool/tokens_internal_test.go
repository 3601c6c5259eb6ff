package pool

import (
	"context"
	"fmt"
	"strings"
	"sync"
	"sync/atomic"
	"testing"
	"time"

	clientv3 "go.etcd.io/etcd/client/v3"
	"go.uber.org/zap"
	"google.golang.org/grpc"
	"google.golang.org/grpc/codes"
	"google.golang.org/grpc/metadata"
	"google.golang.org/grpc/status"
	"google.golang.org/grpc/tap"

	v1 "github.com/hivemind/taskworker/api/taskworker/v1"
	"github.com/hivemind/taskworker/internal/auth"
	"github.com/hivemind/taskworker/internal/etcdserver"
)

// countingKV counts the requests a token store sends to etcd.
type countingKV struct {
	clientv3.KV
	gets, txns, puts atomic.Int64
}

func (c *countingKV) Get(ctx context.Context, key string, opts ...clientv3.OpOption) (*clientv3.GetResponse, error) {
	c.gets.Add(1)
	return c.KV.Get(ctx, key, opts...)
}

func (c *countingKV) Put(ctx context.Context, key, val string, opts ...clientv3.OpOption) (*clientv3.PutResponse, error) {
	c.puts.Add(1)
	return c.KV.Put(ctx, key, val, opts...)
}

func (c *countingKV) Txn(ctx context.Context) clientv3.Txn {
	c.txns.Add(1)
	return c.KV.Txn(ctx)
}

// tokenReplicas starts one etcd and n token stores over it, each with its
// own etcd client, as n pool replicas have; the stores run until the test
// ends.
func tokenReplicas(t *testing.T, n int, flushEvery time.Duration) []*tokenStore {
	t.Helper()
	cfg := etcdserver.DefaultConfig(t.TempDir())
	cfg.TickMs, cfg.ElectionMs = 10, 100
	e, err := etcdserver.Start(context.Background(), cfg)
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(e.Close)
	var stores []*tokenStore
	for range n {
		cli, err := clientv3.New(clientv3.Config{Endpoints: e.Endpoints(), DialTimeout: 5 * time.Second, Logger: zap.NewNop()})
		if err != nil {
			t.Fatal(err)
		}
		s := newTokenStore(cli, "/tw/")
		s.kv = &countingKV{KV: cli}
		if flushEvery > 0 {
			s.flushEvery = flushEvery
		}
		ctx, cancel := context.WithCancel(context.Background())
		ready, done := make(chan struct{}), make(chan struct{})
		go func() {
			defer close(done)
			s.run(ctx, ready)
		}()
		t.Cleanup(func() {
			cancel()
			<-done
			cli.Close()
		})
		select {
		case <-ready:
		case <-time.After(30 * time.Second):
			t.Fatal("the token store did not load")
		}
		stores = append(stores, s)
	}
	return stores
}

func counts(s *tokenStore) *countingKV { return s.kv.(*countingKV) }

// waitKnown waits until store s holds the token in memory (its watch saw it).
func waitKnown(t *testing.T, s *tokenStore, token string) {
	t.Helper()
	deadline := time.Now().Add(30 * time.Second)
	for {
		s.mu.RLock()
		_, ok := s.byHash[auth.Hash(token)]
		s.mu.RUnlock()
		if ok {
			return
		}
		if time.Now().After(deadline) {
			t.Fatal("the watch never delivered the token")
		}
		time.Sleep(5 * time.Millisecond)
	}
}

func incoming(token string) context.Context {
	return metadata.NewIncomingContext(context.Background(), metadata.Pairs(auth.HeaderAuthorization, "Bearer "+token))
}

// TestRedeemJoinCountsUsesAcrossReplicas spends a join token allowed 5
// uses from 40 enrolments at once through two replicas: exactly 5 pass.
func TestRedeemJoinCountsUsesAcrossReplicas(t *testing.T) {
	stores := tokenReplicas(t, 2, 0)
	ctx := context.Background()
	token, _, err := stores[0].create(ctx, auth.JoinUser, v1.Role_ROLE_WORKER, "", time.Hour, 5)
	if err != nil {
		t.Fatal(err)
	}
	var ok atomic.Int64
	var wg sync.WaitGroup
	errs := make(chan error, 40)
	for i := range 40 {
		wg.Add(1)
		go func() {
			defer wg.Done()
			if _, err := stores[i%2].redeemJoin(ctx, token); err != nil {
				errs <- err
				return
			}
			ok.Add(1)
		}()
	}
	wg.Wait()
	close(errs)
	if ok.Load() != 5 {
		t.Errorf("%d enrolments passed with a token allowed 5", ok.Load())
	}
	for err := range errs {
		if st := status.Convert(err); st.Code() != codes.Unauthenticated || !strings.Contains(st.Message(), "is used up: 5 of 5 workers have enrolled with it") {
			t.Errorf("refusal: %v", err)
		}
	}
	for i, s := range stores {
		list, err := s.list(ctx, "")
		if err != nil {
			t.Fatal(err)
		}
		if len(list) != 1 || list[0].Uses != 5 || list[0].MaxUses != 5 {
			t.Errorf("replica %d lists %v; want one token used 5 of 5 times", i, list)
		}
	}
}

func TestRedeemJoinRefuses(t *testing.T) {
	stores := tokenReplicas(t, 1, 0)
	s := stores[0]
	ctx := context.Background()
	mk := func(role v1.Role, ttl time.Duration, uses int64) string {
		tok, _, err := s.create(ctx, "someone", role, "", ttl, uses)
		if err != nil {
			t.Fatal(err)
		}
		return tok
	}
	expiring := mk(v1.Role_ROLE_WORKER, 300*time.Millisecond, 0)
	userToken := mk(v1.Role_ROLE_USER, 0, 0)
	adminToken := mk(v1.Role_ROLE_ADMIN, 0, 0)
	unlimited := mk(v1.Role_ROLE_WORKER, 0, 0)
	revoked := mk(v1.Role_ROLE_WORKER, 0, 3)
	if _, err := s.revoke(ctx, auth.ID(auth.Hash(revoked))); err != nil {
		t.Fatal(err)
	}
	time.Sleep(400 * time.Millisecond) // past the expiring token's expiry
	tests := []struct {
		name, token, msg string
	}{
		{"expired", expiring, "expired at"},
		{"a user's token", userToken, "join token not recognised"},
		{"an admin's token", adminToken, "join token not recognised"},
		{"revoked", revoked, "join token not recognised"},
		{"unknown", auth.NewToken(), "join token not recognised"},
		{"malformed", "tw_short", "malformed API token"},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			_, err := s.redeemJoin(ctx, tt.token)
			if st := status.Convert(err); st.Code() != codes.Unauthenticated || !strings.Contains(st.Message(), tt.msg) {
				t.Errorf("got %v; want Unauthenticated containing %q", err, tt.msg)
			}
		})
	}
	for range 3 {
		if _, err := s.redeemJoin(ctx, unlimited); err != nil {
			t.Fatalf("a join token with no limit: %v", err)
		}
	}
}

// TestUnknownTokensAreNotAFloodOfReads counts the etcd reads that lookups
// of known, repeated unknown and distinct unknown tokens cost.
func TestUnknownTokensAreNotAFloodOfReads(t *testing.T) {
	s := tokenReplicas(t, 1, 0)[0]
	c := counts(s)
	ctx := context.Background()
	good, _, err := s.create(ctx, "alice", v1.Role_ROLE_USER, "", 0, 0)
	if err != nil {
		t.Fatal(err)
	}
	waitKnown(t, s, good)
	method := v1.AdminService_WhoAmI_FullMethodName

	before := c.gets.Load()
	for range 1000 {
		if _, err := s.authenticate(incoming(good), method, true); err != nil {
			t.Fatal(err)
		}
	}
	if n := c.gets.Load() - before; n != 0 {
		t.Errorf("1000 calls with a known token read etcd %d times; want 0", n)
	}

	bad := auth.NewToken()
	before = c.gets.Load()
	for range 1000 {
		_, err := s.authenticate(incoming(bad), method, true)
		if status.Code(err) != codes.Unauthenticated {
			t.Fatalf("unknown token: %v", err)
		}
	}
	if n := c.gets.Load() - before; n != 1 {
		t.Errorf("1000 calls with one unknown token read etcd %d times; want 1", n)
	}

	// Distinct unknown tokens: each is new to the negative cache, and the
	// reads are bounded by the rate instead.
	start := time.Now()
	before = c.gets.Load()
	for range 2000 {
		_, err := s.authenticate(incoming(auth.NewToken()), method, true)
		if status.Code(err) != codes.Unauthenticated {
			t.Fatalf("unknown token: %v", err)
		}
	}
	allowed := int64(missReadBurst + missReadRate*time.Since(start).Seconds() + 1)
	if n := c.gets.Load() - before; n > allowed {
		t.Errorf("2000 distinct unknown tokens read etcd %d times; the rate allows %d", n, allowed)
	} else {
		t.Logf("2000 distinct unknown tokens: %d etcd reads in %s", n, time.Since(start).Round(time.Millisecond))
	}
	// ...and a known token still passes during the flood, from memory.
	if _, err := s.authenticate(incoming(good), method, true); err != nil {
		t.Errorf("a known token during a flood: %v", err)
	}
}

func TestNegativeCacheIsBounded(t *testing.T) {
	s := newTokenStore(nil, "/tw/")
	now := time.Now()
	for i := range 3 * negativeMax {
		s.rememberUnknown(fmt.Sprint(i), now)
		if len(s.unknown) > negativeMax {
			t.Fatalf("%d unknown tokens remembered; the bound is %d", len(s.unknown), negativeMax)
		}
	}
	// The newest is always remembered.
	if _, ok := s.unknown[fmt.Sprint(3*negativeMax-1)]; !ok {
		t.Error("the newest unknown token was not remembered")
	}
}

// TestTokenFoundBeforeTheWatch: a token made through one replica works on
// the other at once, before its watch delivers it, and the unknown-token
// memory does not hide a token made after it was asked for.
func TestTokenFoundBeforeTheWatch(t *testing.T) {
	stores := tokenReplicas(t, 2, 0)
	ctx := context.Background()
	method := v1.AdminService_WhoAmI_FullMethodName
	for i := range 10 {
		tok, _, err := stores[i%2].create(ctx, "alice", v1.Role_ROLE_USER, "", 0, 0)
		if err != nil {
			t.Fatal(err)
		}
		if _, err := stores[(i+1)%2].authenticate(incoming(tok), method, true); err != nil {
			t.Fatalf("a token just made through the other replica: %v", err)
		}
	}
	// A token remembered as unknown, then written, is found once the watch
	// has it.
	tok := auth.NewToken()
	s := stores[1]
	if _, err := s.authenticate(incoming(tok), method, true); status.Code(err) != codes.Unauthenticated {
		t.Fatalf("unknown token: %v", err)
	}
	rec := `{"user":"bob","role":1,"created_at_ms":1}`
	if _, err := stores[0].kv.Put(ctx, stores[0].prefix+auth.Hash(tok), rec); err != nil {
		t.Fatal(err)
	}
	waitKnown(t, s, tok)
	if _, err := s.authenticate(incoming(tok), method, true); err != nil {
		t.Errorf("a token written after it was remembered as unknown: %v", err)
	}
}

// TestTapAnswersFromMemory: the tap never reads etcd; it refuses what it
// knows is bad and leaves a token it does not hold to the interceptor.
func TestTapAnswersFromMemory(t *testing.T) {
	s := tokenReplicas(t, 1, 0)[0]
	ctx := context.Background()
	good, _, _ := s.create(ctx, "alice", v1.Role_ROLE_USER, "", 0, 0)
	expired, _, _ := s.create(ctx, "alice", v1.Role_ROLE_USER, "", time.Millisecond, 0)
	waitKnown(t, s, good)
	waitKnown(t, s, expired)
	c := counts(s)
	before := c.gets.Load()
	call := v1.RPCService_CallFunction_FullMethodName
	for _, tt := range []struct {
		name, token, method string
		code                codes.Code
	}{
		{"known", good, call, codes.OK},
		{"expired", expired, call, codes.Unauthenticated},
		{"wrong role", good, v1.AdminService_CreateToken_FullMethodName, codes.PermissionDenied},
		{"not in memory", auth.NewToken(), call, codes.OK}, // left to the interceptor
		{"malformed", "tw_x", call, codes.Unauthenticated},
	} {
		t.Run(tt.name, func(t *testing.T) {
			_, err := s.tap(incoming(tt.token), &tap.Info{FullMethodName: tt.method})
			if status.Code(err) != tt.code {
				t.Errorf("got %v; want %s", err, tt.code)
			}
		})
	}
	if n := c.gets.Load() - before; n != 0 {
		t.Errorf("the tap read etcd %d times", n)
	}
}

// TestLastUseIsBatched: a thousand calls with one token cost at most one
// etcd write per flush, and the last use reaches the list.
func TestLastUseIsBatched(t *testing.T) {
	s := tokenReplicas(t, 1, 200*time.Millisecond)[0]
	ctx := context.Background()
	tok, _, _ := s.create(ctx, "alice", v1.Role_ROLE_USER, "", 0, 0)
	waitKnown(t, s, tok)
	c := counts(s)
	start := time.Now()
	before := c.txns.Load()
	for range 1000 {
		if _, err := s.authenticate(incoming(tok), v1.AdminService_WhoAmI_FullMethodName, true); err != nil {
			t.Fatal(err)
		}
	}
	var info *v1.TokenInfo
	deadline := time.Now().Add(30 * time.Second)
	for info == nil || info.LastUsedMs == 0 {
		if time.Now().After(deadline) {
			t.Fatal("the last use never reached etcd")
		}
		time.Sleep(50 * time.Millisecond)
		s.usedMu.Lock()
		pending := len(s.used)
		s.usedMu.Unlock()
		if pending > 0 {
			continue // not flushed yet (list would merge it from memory)
		}
		list, err := s.list(ctx, "alice")
		if err != nil {
			t.Fatal(err)
		}
		info = list[0]
	}
	// The flushes' ticks are not aligned with start: a span of n periods
	// holds up to n+1 of them, and one more may be the stop's flush.
	rounds := int64(time.Since(start)/s.flushEvery) + 2
	if n := c.txns.Load() - before; n > rounds {
		t.Errorf("1000 calls cost %d etcd writes in %d flush rounds", n, rounds)
	}
	if info.LastUsedMs < start.UnixMilli() {
		t.Errorf("last used %d, before the calls (%d)", info.LastUsedMs, start.UnixMilli())
	}
	// A token revoked with a use pending leaves no last-use record behind.
	s.noteUse(auth.Hash(tok), time.Now())
	if _, err := s.revoke(ctx, auth.ID(auth.Hash(tok))); err != nil {
		t.Fatal(err)
	}
	s.noteUse(auth.Hash(tok), time.Now()) // a call that raced the revocation
	s.flushOnce(ctx)
	resp, err := s.kv.Get(ctx, s.usePrefix, clientv3.WithPrefix(), clientv3.WithCountOnly())
	if err != nil {
		t.Fatal(err)
	}
	if resp.Count != 0 {
		t.Errorf("%d last-use records left after the revocation", resp.Count)
	}
}

// BenchmarkAuthenticateKnown is the cost a call pays for its token: the
// hash, the map, the role check and noting the use, from many goroutines.
func BenchmarkAuthenticateKnown(b *testing.B) {
	s := newTokenStore(nil, "/tw/")
	tok := auth.NewToken()
	s.byHash[auth.Hash(tok)] = tokenRecord{User: "alice", Role: v1.Role_ROLE_USER}
	ctx := incoming(tok)
	b.RunParallel(func(pb *testing.PB) {
		for pb.Next() {
			if _, err := s.authenticate(ctx, v1.RPCService_CallFunction_FullMethodName, false); err != nil {
				b.Fatal(err)
			}
		}
	})
}

type ctxStream struct {
	grpc.ServerStream
	ctx context.Context
}

func (s ctxStream) Context() context.Context { return s.ctx }

// TestStreamOfATokenRevokedBeforeItWasTracked: a revocation that the
// watch delivers between a stream's authentication (in the tap) and its
// tracking would cut nothing; the stream looks again and is refused.
func TestStreamOfATokenRevokedBeforeItWasTracked(t *testing.T) {
	s := tokenReplicas(t, 1, 0)[0]
	ctx := context.Background()
	tok, _, _ := s.create(ctx, "alice", v1.Role_ROLE_USER, "", 0, 0)
	waitKnown(t, s, tok)
	method := v1.FileService_WatchChanges_FullMethodName
	authed, err := s.tap(incoming(tok), &tap.Info{FullMethodName: method})
	if err != nil {
		t.Fatal(err)
	}
	before := s.deletions.Load()
	if _, err := s.revoke(ctx, auth.ID(auth.Hash(tok))); err != nil {
		t.Fatal(err)
	}
	for deadline := time.Now().Add(30 * time.Second); s.deletions.Load() == before; {
		if time.Now().After(deadline) {
			t.Fatal("the watch never delivered the revocation")
		}
		time.Sleep(5 * time.Millisecond)
	}
	ran := false
	err = s.streamInterceptor(nil, ctxStream{ctx: authed}, &grpc.StreamServerInfo{FullMethod: method}, func(any, grpc.ServerStream) error {
		ran = true
		return nil
	})
	if st := status.Convert(err); st.Code() != codes.Unauthenticated || !strings.Contains(st.Message(), "was revoked") || ran {
		t.Errorf("a stream of a token revoked before it was tracked: handler ran %v, %v", ran, err)
	}
}
