package pool_test

import (
	"context"
	"errors"
	"os"
	"path/filepath"
	"strings"
	"testing"
	"time"

	"google.golang.org/grpc"
	"google.golang.org/grpc/codes"
	healthpb "google.golang.org/grpc/health/grpc_health_v1"
	"google.golang.org/grpc/metadata"
	"google.golang.org/grpc/status"
	"google.golang.org/protobuf/encoding/protojson"

	v1 "github.com/hivemind/taskworker/api/taskworker/v1"
	"github.com/hivemind/taskworker/internal/auth"
	"github.com/hivemind/taskworker/internal/cluster"
	"github.com/hivemind/taskworker/internal/pool"
)

// conns dials every pool of c without credentials; calls carry their token
// in metadata (withToken).
func conns(t *testing.T, c *cluster.Cluster, n int) []*grpc.ClientConn {
	t.Helper()
	var out []*grpc.ClientConn
	for p := range n {
		out = append(out, c.PoolConn(p))
	}
	return out
}

func withToken(ctx context.Context, token string) context.Context {
	return metadata.AppendToOutgoingContext(ctx, auth.HeaderAuthorization, "Bearer "+token)
}

func whoAmI(ctx context.Context, conn *grpc.ClientConn, token string) error {
	_, err := v1.NewAdminServiceClient(conn).WhoAmI(withToken(ctx, token), &v1.WhoAmIRequest{})
	return err
}

// TestRevokedAndExpiredTokensRefusedOnEveryPool runs two pools over one
// etcd: a token revoked through one is refused by both, and a token past
// its expiry is refused by both at once.
func TestRevokedAndExpiredTokensRefusedOnEveryPool(t *testing.T) {
	c := cluster.New(t, cluster.Options{Pools: 2, Workers: 1})
	ctx := ctxTimeout(t, 60*time.Second)
	cs := conns(t, c, 2)
	admin := v1.NewAdminServiceClient(cs[0])
	create := func(req *v1.CreateTokenRequest) *v1.CreateTokenResponse {
		t.Helper()
		resp, err := admin.CreateToken(withToken(ctx, c.AdminToken), req)
		if err != nil {
			t.Fatal(err)
		}
		return resp
	}

	revoked := create(&v1.CreateTokenRequest{User: "alice"})
	for p, conn := range cs {
		if err := whoAmI(ctx, conn, revoked.Token); err != nil {
			t.Fatalf("pool %d before the revocation: %v", p, err)
		}
	}
	// A stream opened with the token ends when it is revoked.
	wctx, cancelWatch := context.WithCancel(withToken(ctx, revoked.Token))
	defer cancelWatch()
	watch, err := v1.NewFileServiceClient(cs[1]).WatchChanges(wctx, &v1.SynchronousRequest{})
	if err != nil {
		t.Fatal(err)
	}
	if _, err := watch.Recv(); err != nil {
		t.Fatal(err)
	}
	revokedAt := time.Now()
	if _, err := v1.NewAdminServiceClient(cs[1]).RevokeToken(withToken(ctx, c.AdminToken), &v1.RevokeTokenRequest{Id: revoked.Id}); err != nil {
		t.Fatal(err)
	}
	for p, conn := range cs {
		for {
			err := whoAmI(ctx, conn, revoked.Token)
			if status.Code(err) == codes.Unauthenticated && strings.Contains(err.Error(), "not recognised") {
				t.Logf("pool %d refuses the revoked token %s after the revocation", p, time.Since(revokedAt).Round(time.Millisecond))
				break
			}
			if time.Since(revokedAt) > 10*time.Second {
				t.Fatalf("pool %d still answers %v to a revoked token", p, err)
			}
			time.Sleep(10 * time.Millisecond)
		}
	}
	if _, err := watch.Recv(); status.Code(err) != codes.Unauthenticated || !strings.Contains(err.Error(), "was revoked during the call") {
		t.Errorf("the watch of a revoked token: %v", err)
	}
	if _, err := admin.RevokeToken(withToken(ctx, c.AdminToken), &v1.RevokeTokenRequest{Id: revoked.Id}); status.Code(err) != codes.NotFound {
		t.Errorf("revoking it again: %v", err)
	}

	ttl := 5 * time.Second
	expiring := create(&v1.CreateTokenRequest{User: "alice", TtlMs: ttl.Milliseconds()})
	if expiring.ExpiresAtMs == 0 {
		t.Fatal("a token with a ttl has no expiry")
	}
	for p, conn := range cs {
		if err := whoAmI(ctx, conn, expiring.Token); err != nil {
			t.Fatalf("pool %d before the expiry: %v", p, err)
		}
	}
	// Expiry is checked at each lookup: once the time is past, every pool
	// refuses it, with no watch to wait for.
	time.Sleep(time.Until(time.UnixMilli(expiring.ExpiresAtMs)) + 10*time.Millisecond)
	for p, conn := range cs {
		err := whoAmI(ctx, conn, expiring.Token)
		if st := status.Convert(err); st.Code() != codes.Unauthenticated || !strings.Contains(st.Message(), "API token "+expiring.Id+" expired at") {
			t.Errorf("pool %d, an expired token: %v", p, err)
		}
	}
}

// TestTokenList: ls shows ids, users, roles, expiry and uses, never a
// secret or a whole hash; only an admin may list or revoke.
func TestTokenList(t *testing.T) {
	c := cluster.New(t, cluster.Options{Workers: 1})
	ctx := ctxTimeout(t, 60*time.Second)
	conn := conns(t, c, 1)[0]
	admin := v1.NewAdminServiceClient(conn)
	actx := withToken(ctx, c.AdminToken)
	secrets := []string{c.AdminToken, c.JoinToken}
	made := map[string]*v1.CreateTokenRequest{}
	for _, req := range []*v1.CreateTokenRequest{
		{User: "alice", Description: "laptop"},
		{User: "alice", TtlMs: time.Hour.Milliseconds()},
		{User: "bob", Role: v1.Role_ROLE_ADMIN},
		{User: auth.JoinUser, Role: v1.Role_ROLE_WORKER, TtlMs: time.Hour.Milliseconds(), MaxUses: 5},
	} {
		resp, err := admin.CreateToken(actx, req)
		if err != nil {
			t.Fatal(err)
		}
		secrets = append(secrets, resp.Token)
		made[resp.Id] = req
	}
	list, err := admin.ListTokens(actx, &v1.ListTokensRequest{})
	if err != nil {
		t.Fatal(err)
	}
	if len(list.Tokens) != 6 {
		t.Fatalf("%d tokens listed; want 6 (2 bootstrap, 4 made): %v", len(list.Tokens), list.Tokens)
	}
	text := protojson.Format(list)
	for _, secret := range secrets {
		if strings.Contains(text, secret) || strings.Contains(text, secret[len(auth.Prefix):len(auth.Prefix)+12]) || strings.Contains(text, auth.Hash(secret)[:auth.IDLen+1]) {
			t.Errorf("the list shows a secret or more of its hash than the id: %s", text)
		}
	}
	bootstrap := 0
	for _, tok := range list.Tokens {
		if tok.Bootstrap {
			bootstrap++
			if role, ok := auth.ReservedRole(tok.User); !ok || role != tok.Role {
				t.Errorf("bootstrap token of user %q with role %s: the name is not reserved to that role", tok.User, tok.Role)
			}
			continue
		}
		req := made[tok.Id]
		if req == nil {
			t.Errorf("listed a token nobody made: %v", tok)
			continue
		}
		wantRole := req.Role
		if wantRole == v1.Role_ROLE_UNSPECIFIED {
			wantRole = v1.Role_ROLE_USER
		}
		if tok.User != req.User || tok.Role != wantRole || tok.Description != req.Description || tok.MaxUses != req.MaxUses ||
			(tok.ExpiresAtMs != 0) != (req.TtlMs != 0) || tok.CreatedAtMs == 0 {
			t.Errorf("listed %v for %v", tok, req)
		}
	}
	if bootstrap != 2 {
		t.Errorf("%d bootstrap tokens listed; want 2", bootstrap)
	}
	alice, err := admin.ListTokens(actx, &v1.ListTokensRequest{User: "alice"})
	if err != nil || len(alice.Tokens) != 2 {
		t.Errorf("alice's tokens: %v %v", alice, err)
	}

	userToken := secrets[2]
	if _, err := admin.ListTokens(withToken(ctx, userToken), &v1.ListTokensRequest{}); status.Code(err) != codes.PermissionDenied {
		t.Errorf("a user listing tokens: %v", err)
	}
	if _, err := admin.RevokeToken(withToken(ctx, userToken), &v1.RevokeTokenRequest{Id: list.Tokens[0].Id}); status.Code(err) != codes.PermissionDenied {
		t.Errorf("a user revoking a token: %v", err)
	}
	for _, id := range []string{"", "abc", strings.Repeat("g", auth.IDLen), auth.Hash(userToken)} {
		if _, err := admin.RevokeToken(actx, &v1.RevokeTokenRequest{Id: id}); status.Code(err) != codes.InvalidArgument {
			t.Errorf("revoking id %q: %v", id, err)
		}
	}
}

// TestTokenCreateRefuses: reserved names, use counts on API tokens, and
// bad lifetimes are refused with what to change.
func TestTokenCreateRefuses(t *testing.T) {
	c := cluster.New(t, cluster.Options{Workers: 1})
	ctx := withToken(ctxTimeout(t, 60*time.Second), c.AdminToken)
	admin := v1.NewAdminServiceClient(conns(t, c, 1)[0])
	tests := []struct {
		name string
		req  *v1.CreateTokenRequest
		msg  string // empty: accepted
	}{
		{"admin as a user", &v1.CreateTokenRequest{User: "admin"}, `user "admin" is reserved for the pool's admin token`},
		{"Admin as a user", &v1.CreateTokenRequest{User: "Admin", Role: v1.Role_ROLE_USER}, "is reserved"},
		{"worker as a user", &v1.CreateTokenRequest{User: "worker", Role: v1.Role_ROLE_USER}, `user "worker" is reserved for the pool's worker token`},
		{"worker as an admin", &v1.CreateTokenRequest{User: "worker", Role: v1.Role_ROLE_ADMIN}, "reserved"},
		{"admin as a user, forced", &v1.CreateTokenRequest{User: "admin", Force: true}, ""},
		{"another admin", &v1.CreateTokenRequest{User: "admin", Role: v1.Role_ROLE_ADMIN}, ""},
		{"a join token", &v1.CreateTokenRequest{User: "worker", Role: v1.Role_ROLE_WORKER, MaxUses: 3, TtlMs: 60000}, ""},
		{"uses on a user token", &v1.CreateTokenRequest{User: "alice", MaxUses: 3}, "max_uses limits join tokens (role worker) only"},
		{"negative uses", &v1.CreateTokenRequest{User: "worker", Role: v1.Role_ROLE_WORKER, MaxUses: -1}, "max_uses -1"},
		{"negative ttl", &v1.CreateTokenRequest{User: "alice", TtlMs: -1}, "ttl_ms -1"},
		{"ttl too long", &v1.CreateTokenRequest{User: "alice", TtlMs: 1 << 62}, "up to"},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			_, err := admin.CreateToken(ctx, tt.req)
			if tt.msg == "" {
				if err != nil {
					t.Fatalf("refused: %v", err)
				}
				return
			}
			if st := status.Convert(err); st.Code() != codes.InvalidArgument || !strings.Contains(st.Message(), tt.msg) {
				t.Errorf("got %v; want InvalidArgument containing %q", err, tt.msg)
			}
		})
	}
	// The role is the record's, whatever the name: a forced user token
	// named admin is a user.
	forced, err := admin.CreateToken(ctx, &v1.CreateTokenRequest{User: "admin", Force: true})
	if err != nil {
		t.Fatal(err)
	}
	if _, err := admin.ListTokens(withToken(context.Background(), forced.Token), &v1.ListTokensRequest{}); status.Code(err) != codes.PermissionDenied {
		t.Errorf("a user token named admin listing tokens: %v", err)
	}
}

// TestRevokedBootstrapTokenStaysRevoked: a pool restarted with a revoked
// admin.token refuses to start and says what to do, instead of bringing the
// token back.
func TestRevokedBootstrapTokenStaysRevoked(t *testing.T) {
	c := cluster.New(t, cluster.Options{Pools: 2, Workers: 1})
	ctx := ctxTimeout(t, 60*time.Second)
	second := c.Pools[1].AdminToken()
	if _, err := v1.NewAdminServiceClient(c.Client(0).Conn()).RevokeToken(ctx, &v1.RevokeTokenRequest{Id: auth.ID(auth.Hash(second))}); err != nil {
		t.Fatal(err)
	}
	c.KillPool(1)
	cfg := c.PoolConfig(1)
	cfg.Listen = "127.0.0.1:0"
	p, err := pool.New(cfg)
	if err != nil {
		t.Fatal(err)
	}
	err = p.Start(ctx)
	if err == nil || !strings.Contains(err.Error(), "which was revoked (taskworker token revoke); delete the file") {
		p.Kill()
		t.Fatalf("a pool starting with a revoked admin.token: %v", err)
	}
	if err := os.Remove(filepath.Join(cfg.DataDir, pool.AdminTokenFile)); err != nil {
		t.Fatal(err)
	}
	if err := p.Start(ctx); err != nil {
		t.Fatalf("after deleting the file: %v", err)
	}
	defer p.Kill()
	if p.AdminToken() == second {
		t.Fatal("the revoked token came back")
	}
	conn := c.ConnTo(p.Addr())
	if err := whoAmI(ctx, conn, p.AdminToken()); err != nil {
		t.Errorf("the new admin token: %v", err)
	}
	if err := whoAmI(ctx, conn, second); status.Code(err) != codes.Unauthenticated {
		t.Errorf("the revoked admin token: %v", err)
	}
}

// TestUnauthenticatedCallsAreRefusedFromTheirHeaders sends messages over
// the pool's size limit with bad credentials: had the pool read them, it
// would answer ResourceExhausted; it answers from the headers instead.
func TestUnauthenticatedCallsAreRefusedFromTheirHeaders(t *testing.T) {
	c := cluster.New(t, cluster.Options{Workers: 1})
	ctx := ctxTimeout(t, 60*time.Second)
	conn := conns(t, c, 1)[0]
	rpc := v1.NewRPCServiceClient(conn)
	admin := v1.NewAdminServiceClient(conn)
	expired, err := admin.CreateToken(withToken(ctx, c.AdminToken), &v1.CreateTokenRequest{User: "alice", TtlMs: 1})
	if err != nil {
		t.Fatal(err)
	}
	unknown := auth.NewToken()
	// Once seen, an unknown token is remembered as unknown.
	if _, err := rpc.CallFunction(withToken(ctx, unknown), &v1.FunctionCallRequest{FunctionName: "add"}); status.Code(err) != codes.Unauthenticated {
		t.Fatalf("unknown token: %v", err)
	}
	huge := &v1.FunctionCallRequest{FunctionName: "echo", Args: []byte(`["` + strings.Repeat("x", 17<<20) + `"]`)}
	for _, tt := range []struct {
		name string
		ctx  context.Context
		code codes.Code
		msg  string
	}{
		{"no token", ctx, codes.Unauthenticated, "no API token"},
		{"malformed token", withToken(ctx, "tw_nope"), codes.Unauthenticated, "malformed API token"},
		{"unknown token", withToken(ctx, unknown), codes.Unauthenticated, "not recognised"},
		{"expired token", withToken(ctx, expired.Token), codes.Unauthenticated, "expired at"},
		{"join token", withToken(ctx, c.JoinToken), codes.PermissionDenied, "role worker cannot call this"},
		{"the admin's token", withToken(ctx, c.AdminToken), codes.ResourceExhausted, "larger than max"},
	} {
		t.Run(tt.name, func(t *testing.T) {
			// A token the pool's watch has not yet delivered (the expired
			// one, made a moment ago) is left to the interceptors, after
			// the read: call again until the watch has it.
			deadline := time.Now().Add(10 * time.Second)
			_, err := rpc.CallFunction(tt.ctx, huge)
			for tt.code != codes.ResourceExhausted && status.Code(err) == codes.ResourceExhausted && time.Now().Before(deadline) {
				time.Sleep(100 * time.Millisecond)
				_, err = rpc.CallFunction(tt.ctx, huge)
			}
			if st := status.Convert(err); st.Code() != tt.code || !strings.Contains(st.Message(), tt.msg) {
				t.Errorf("got %v; want %s containing %q", err, tt.code, tt.msg)
			}
		})
	}
}

// TestMaxConcurrentStreams: one connection holds at most the pool's limit
// of streams; the next waits until one ends.
func TestMaxConcurrentStreams(t *testing.T) {
	c := cluster.New(t, cluster.Options{Workers: 1})
	ctx := ctxTimeout(t, 60*time.Second)
	conn := conns(t, c, 1)[0]
	health := healthpb.NewHealthClient(conn)
	const limit = pool.MaxConcurrentStreams
	var cancels []context.CancelFunc
	defer func() {
		for _, cancel := range cancels {
			cancel()
		}
	}()
	for i := range limit {
		sctx, cancel := context.WithCancel(ctx)
		cancels = append(cancels, cancel)
		w, err := health.Watch(sctx, &healthpb.HealthCheckRequest{})
		if err != nil {
			t.Fatalf("stream %d: %v", i, err)
		}
		if _, err := w.Recv(); err != nil {
			t.Fatalf("stream %d: %v", i, err)
		}
	}
	over, cancel := context.WithTimeout(ctx, time.Second)
	defer cancel()
	w, err := health.Watch(over, &healthpb.HealthCheckRequest{})
	if err == nil {
		_, err = w.Recv()
	}
	if !errors.Is(err, context.DeadlineExceeded) && status.Code(err) != codes.DeadlineExceeded {
		t.Fatalf("stream %d on one connection: %v; want it held back", limit+1, err)
	}
	cancels[0]()
	w, err = health.Watch(ctx, &healthpb.HealthCheckRequest{})
	if err == nil {
		_, err = w.Recv()
	}
	if err != nil {
		t.Errorf("a stream after one ended: %v", err)
	}
}
