package secrets_test

import (
	"bytes"
	"context"
	"errors"
	"log/slog"
	"net"
	"strings"
	"sync"
	"testing"

	"google.golang.org/grpc"
	"google.golang.org/grpc/codes"
	"google.golang.org/grpc/credentials/insecure"
	"google.golang.org/grpc/metadata"
	"google.golang.org/grpc/status"
	"google.golang.org/protobuf/proto"

	v1 "github.com/hivemind/taskworker/api/taskworker/v1"
	"github.com/hivemind/taskworker/internal/secrets"
)

// The tests' stand-in for the pool's token check, which is not what they
// test: the caller's user and role come from metadata, and user_id is
// resolved by the pool's rule (a user names only itself, an admin anyone).
const (
	testUserKey = "x-test-user"
	testRoleKey = "x-test-role"
)

type caller struct{ user, role string }

type callerKey struct{}

func identify(ctx context.Context, req any, _ *grpc.UnaryServerInfo, h grpc.UnaryHandler) (any, error) {
	md, _ := metadata.FromIncomingContext(ctx)
	c := caller{}
	if v := md.Get(testUserKey); len(v) > 0 {
		c.user = v[0]
	}
	if v := md.Get(testRoleKey); len(v) > 0 {
		c.role = v[0]
	}
	if c.user == "" {
		return nil, status.Error(codes.Unauthenticated, "no user")
	}
	return h(context.WithValue(ctx, callerKey{}, c), req)
}

func checkUser(ctx context.Context, userID string) (string, error) {
	c := ctx.Value(callerKey{}).(caller)
	if userID == "" || userID == c.user {
		return c.user, nil
	}
	if c.role == "admin" {
		return userID, nil
	}
	return "", status.Errorf(codes.PermissionDenied, "user_id %q does not match the token's user %q", userID, c.user)
}

// syncBuffer is a log sink the server's goroutines write to.
type syncBuffer struct {
	mu sync.Mutex
	b  bytes.Buffer
}

func (s *syncBuffer) Write(p []byte) (int, error) {
	s.mu.Lock()
	defer s.mu.Unlock()
	return s.b.Write(p)
}

func (s *syncBuffer) Bytes() []byte {
	s.mu.Lock()
	defer s.mu.Unlock()
	return bytes.Clone(s.b.Bytes())
}

// served is a harness with the SecretService and the KeyService on a real
// gRPC server over TCP, logging at debug level into logs.
type served struct {
	*harness
	logs    *syncBuffer
	conn    *grpc.ClientConn
	secrets v1.SecretServiceClient
	keys    v1.KeyServiceClient
	files   *fakeFiles
}

// fakeFiles stands in for the file service's data keys in the KeyService
// tests: it counts its rewraps and fails when told to.
type fakeFiles struct {
	mu   sync.Mutex
	fail error
}

func (f *fakeFiles) failWith(err error) {
	f.mu.Lock()
	defer f.mu.Unlock()
	f.fail = err
}

func (f *fakeFiles) RewrapKeys(context.Context) (int, error) {
	f.mu.Lock()
	defer f.mu.Unlock()
	if f.fail != nil {
		return 2, f.fail
	}
	return 7, nil
}

func serve(t *testing.T) *served {
	t.Helper()
	h := newHarness(t)
	logs := &syncBuffer{}
	log := slog.New(slog.NewTextHandler(logs, &slog.HandlerOptions{Level: slog.LevelDebug}))
	srv := grpc.NewServer(grpc.UnaryInterceptor(identify))
	secrets.NewServer(h.store, checkUser, log).Register(srv)
	files := &fakeFiles{}
	secrets.NewKeyServer(h.ring, map[string]secrets.Rewrapper{"secrets": h.store, "files": files}, log).Register(srv)
	lis, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	go srv.Serve(lis)
	t.Cleanup(srv.Stop)
	conn, err := grpc.NewClient(lis.Addr().String(), grpc.WithTransportCredentials(insecure.NewCredentials()))
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { conn.Close() })
	s := &served{harness: h, logs: logs, conn: conn, secrets: v1.NewSecretServiceClient(conn), keys: v1.NewKeyServiceClient(conn), files: files}
	t.Cleanup(func() { s.checkNoValueInLogs(t) })
	return s
}

func as(user, role string) context.Context {
	return metadata.AppendToOutgoingContext(context.Background(), testUserKey, user, testRoleKey, role)
}

func (s *served) checkNoValueInLogs(t *testing.T) {
	logs := s.logs.Bytes()
	if len(logs) == 0 {
		t.Error("the servers logged nothing at debug level: the check that no value is logged checked nothing")
	}
	for _, v := range values {
		if bytes.Contains(logs, v) {
			t.Errorf("a secret's value is in the servers' logs:\n%s", logs)
		}
	}
}

// noValue fails if a response, marshalled, holds a secret's value.
func noValue(t *testing.T, m proto.Message) {
	t.Helper()
	b, err := proto.Marshal(m)
	if err != nil {
		t.Fatal(err)
	}
	for _, v := range values {
		if bytes.Contains(b, v) {
			t.Fatalf("a response holds a secret's value: %v", m)
		}
	}
}

// noValueErr fails if an error's status holds a secret's value.
func noValueErr(t *testing.T, err error) {
	t.Helper()
	if err == nil {
		return
	}
	noValue(t, status.Convert(err).Proto())
}

// The whole life of a secret through the SecretService: nothing returned
// or logged holds its value.
func TestSecretServiceOverGRPC(t *testing.T) {
	s := serve(t)
	alice := as("alice", "user")
	put, err := s.secrets.Put(alice, &v1.PutSecretRequest{Name: "API_KEY", Value: values[0]})
	if err != nil || put.GetVersion() != 1 {
		t.Fatalf("Put: %v, %v", put, err)
	}
	noValue(t, put)
	if put, _ = s.secrets.Put(alice, &v1.PutSecretRequest{Name: "API_KEY", Value: values[1]}); put.GetVersion() != 2 {
		t.Fatalf("second Put made version %d", put.GetVersion())
	}
	g, err := s.secrets.Grant(alice, &v1.GrantSecretRequest{Name: "API_KEY", Function: "fetcher", Hosts: []string{"https://api.example.com"}})
	if err != nil || len(g.GetSecret().GetGrants()) != 1 || g.GetSecret().GetGrants()[0].GetHosts()[0] != "https://api.example.com" {
		t.Fatalf("Grant: %v, %v", g, err)
	}
	if _, err := s.secrets.Grant(alice, &v1.GrantSecretRequest{Name: "API_KEY", Function: "reader"}); err != nil {
		t.Fatal(err)
	}
	list, err := s.secrets.List(alice, &v1.ListSecretsRequest{})
	if err != nil || len(list.GetSecrets()) != 1 {
		t.Fatalf("List: %v, %v", list, err)
	}
	noValue(t, list)
	if info := list.GetSecrets()[0]; info.GetName() != "API_KEY" || len(info.GetVersions()) != 2 || len(info.GetGrants()) != 2 {
		t.Fatalf("List shows %v, want API_KEY with 2 versions and 2 grants", info)
	}
	// A function reads it during a call (through its worker, not this
	// service); the read shows in the audit.
	if _, _, err := s.store.Read(context.Background(), secrets.Reader{Owner: "alice", Function: "reader", Caller: "carol"}, "API_KEY", 0); err != nil {
		t.Fatal(err)
	}
	audit, err := s.secrets.Audit(alice, &v1.AuditRequest{})
	if err != nil || len(audit.GetEvents()) != 1 {
		t.Fatalf("Audit: %v, %v", audit, err)
	}
	if e := audit.GetEvents()[0]; e.GetSecret() != "API_KEY" || e.GetVersion() != 2 || e.GetFunction() != "reader" || e.GetCaller() != "carol" || e.GetAtMs() == 0 {
		t.Fatalf("audit event %v", e)
	}
	rv, err := s.secrets.Revoke(alice, &v1.RevokeSecretRequest{Name: "API_KEY", Function: "reader"})
	if err != nil || len(rv.GetSecret().GetGrants()) != 1 {
		t.Fatalf("Revoke: %v, %v", rv, err)
	}
	if _, err := s.secrets.Delete(alice, &v1.DeleteSecretRequest{Name: "API_KEY"}); err != nil {
		t.Fatal(err)
	}
	if list, _ := s.secrets.List(alice, &v1.ListSecretsRequest{}); len(list.GetSecrets()) != 0 {
		t.Fatalf("List after Delete: %v", list)
	}
}

// Another user can neither see nor touch Bob's secret: in their own
// namespace it does not exist, and naming Bob is refused. An admin may act
// for Bob.
func TestOthersCannotReachBobsSecret(t *testing.T) {
	s := serve(t)
	bob := as("bob", "user")
	if _, err := s.secrets.Put(bob, &v1.PutSecretRequest{Name: "K", Value: values[2]}); err != nil {
		t.Fatal(err)
	}
	if _, err := s.secrets.Grant(bob, &v1.GrantSecretRequest{Name: "K", Function: "f"}); err != nil {
		t.Fatal(err)
	}
	s.store.Read(context.Background(), secrets.Reader{Owner: "bob", Function: "f", Caller: "bob"}, "K", 0)
	eve := as("eve", "user")
	tests := []struct {
		name string
		call func(ctx context.Context, user string) error
	}{
		{"list", func(ctx context.Context, user string) error {
			l, err := s.secrets.List(ctx, &v1.ListSecretsRequest{UserId: user})
			if err == nil && len(l.GetSecrets()) > 0 {
				return errors.New("sees secrets")
			}
			return err
		}},
		{"put over it", func(ctx context.Context, user string) error {
			_, err := s.secrets.Put(ctx, &v1.PutSecretRequest{UserId: user, Name: "K", Value: []byte("eve's")})
			if err == nil && user == "" {
				return nil // eve's own K, not bob's
			}
			return err
		}},
		{"grant", func(ctx context.Context, user string) error {
			_, err := s.secrets.Grant(ctx, &v1.GrantSecretRequest{UserId: user, Name: "K", Function: "evil"})
			return err
		}},
		{"revoke", func(ctx context.Context, user string) error {
			_, err := s.secrets.Revoke(ctx, &v1.RevokeSecretRequest{UserId: user, Name: "K", Function: "f"})
			return err
		}},
		{"delete", func(ctx context.Context, user string) error {
			_, err := s.secrets.Delete(ctx, &v1.DeleteSecretRequest{UserId: user, Name: "K"})
			return err
		}},
		{"audit", func(ctx context.Context, user string) error {
			a, err := s.secrets.Audit(ctx, &v1.AuditRequest{UserId: user})
			if err == nil && len(a.GetEvents()) > 0 {
				return errors.New("sees bob's reads")
			}
			return err
		}},
	}
	for _, tt := range tests {
		t.Run(tt.name+" naming bob", func(t *testing.T) {
			err := tt.call(eve, "bob")
			if status.Code(err) != codes.PermissionDenied {
				t.Fatalf("%v, want PermissionDenied", err)
			}
		})
		t.Run(tt.name+" in eve's namespace", func(t *testing.T) {
			err := tt.call(eve, "")
			if c := status.Code(err); c != codes.OK && c != codes.NotFound {
				t.Fatalf("%v, want OK (eve's own, empty) or NotFound", err)
			}
			noValueErr(t, err)
		})
	}
	// Bob's secret is as it was, and eve's Put made her own.
	list, err := s.secrets.List(as("admin", "admin"), &v1.ListSecretsRequest{UserId: "bob"})
	if err != nil || len(list.GetSecrets()) != 1 || len(list.GetSecrets()[0].GetVersions()) != 1 || len(list.GetSecrets()[0].GetGrants()) != 1 {
		t.Fatalf("bob's secrets, as the admin sees them: %v, %v", list, err)
	}
	got, _, err := s.store.Read(context.Background(), secrets.Reader{Owner: "bob", Function: "f"}, "K", 0)
	if err != nil || !bytes.Equal(got, values[2]) {
		t.Fatalf("bob's function reads: %v", err)
	}
}

func TestSecretServiceErrors(t *testing.T) {
	s := serve(t)
	alice := as("alice", "user")
	if _, err := s.secrets.Put(alice, &v1.PutSecretRequest{Name: "K", Value: values[0]}); err != nil {
		t.Fatal(err)
	}
	tests := []struct {
		name string
		call func() error
		code codes.Code
		says string
	}{
		{"a name that is a path", func() error {
			_, err := s.secrets.Put(alice, &v1.PutSecretRequest{Name: "../bob/K", Value: values[0]})
			return err
		}, codes.InvalidArgument, "secret"},
		{"an empty value", func() error {
			_, err := s.secrets.Put(alice, &v1.PutSecretRequest{Name: "E"})
			return err
		}, codes.InvalidArgument, "empty"},
		{"a value too large", func() error {
			_, err := s.secrets.Put(alice, &v1.PutSecretRequest{Name: "BIG", Value: make([]byte, secrets.MaxValueBytes+1)})
			return err
		}, codes.InvalidArgument, "at most"},
		{"delete a secret that does not exist", func() error {
			_, err := s.secrets.Delete(alice, &v1.DeleteSecretRequest{Name: "NOPE"})
			return err
		}, codes.NotFound, "NOPE"},
		{"grant a secret that does not exist", func() error {
			_, err := s.secrets.Grant(alice, &v1.GrantSecretRequest{Name: "NOPE", Function: "f"})
			return err
		}, codes.NotFound, "no such secret"},
		{"grant toward a host rule without a scheme", func() error {
			_, err := s.secrets.Grant(alice, &v1.GrantSecretRequest{Name: "K", Function: "f", Hosts: []string{"api.example.com"}})
			return err
		}, codes.InvalidArgument, "https://"},
		{"grant to a function name that is a path", func() error {
			_, err := s.secrets.Grant(alice, &v1.GrantSecretRequest{Name: "K", Function: "a/b"})
			return err
		}, codes.InvalidArgument, "function"},
		{"revoke a grant never made", func() error {
			_, err := s.secrets.Revoke(alice, &v1.RevokeSecretRequest{Name: "K", Function: "f"})
			return err
		}, codes.NotFound, "no such grant"},
		{"a negative audit limit", func() error {
			_, err := s.secrets.Audit(alice, &v1.AuditRequest{Limit: -1})
			return err
		}, codes.InvalidArgument, "negative"},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			err := tt.call()
			if status.Code(err) != tt.code || !strings.Contains(status.Convert(err).Message(), tt.says) {
				t.Fatalf("%v, want %s saying %q", err, tt.code, tt.says)
			}
			noValueErr(t, err)
		})
	}
}

// KeyService (admins only: see internal/auth's table and its test): a
// rotation makes a new master key current and rewraps every
// store's data keys; after it, the old master key can go and every secret
// still reads. A store that fails is reported, and rewrap_only finishes.
func TestRotateKeysOverGRPC(t *testing.T) {
	s := serve(t)
	ctx := context.Background()
	for _, p := range []struct {
		owner, name string
		value       []byte
	}{{"alice", "A", values[0]}, {"alice", "A", values[1]}, {"bob", "B", values[2]}} {
		if _, err := s.secrets.Put(as(p.owner, "user"), &v1.PutSecretRequest{Name: p.name, Value: p.value}); err != nil {
			t.Fatal(err)
		}
		s.store.Grant(ctx, p.owner, p.name, "f", nil)
	}
	old := s.ring.Current()
	s.files.failWith(errors.New("etcd unavailable"))
	resp, err := s.keys.RotateKeys(as("admin", "admin"), &v1.RotateKeysRequest{})
	if err != nil {
		t.Fatal(err)
	}
	if resp.GetCurrentKeyId() == old || len(resp.GetKeyIds()) < 2 || resp.GetKeyFile() == "" {
		t.Fatalf("RotateKeys: %v; want a new current key among several, and the key file", resp)
	}
	byStore := map[string]*v1.KeysRewrapped{}
	for _, r := range resp.GetRewrapped() {
		byStore[r.GetStore()] = r
	}
	if byStore["secrets"].GetError() != "" || byStore["files"].GetError() == "" || byStore["files"].GetKeys() != 2 {
		t.Fatalf("rewrapped: %v; want secrets done and files' failure reported", resp.GetRewrapped())
	}
	s.files.failWith(nil)
	again, err := s.keys.RotateKeys(as("admin", "admin"), &v1.RotateKeysRequest{RewrapOnly: true})
	if err != nil || again.GetCurrentKeyId() != resp.GetCurrentKeyId() {
		t.Fatalf("rewrap_only: %v, %v; want the same current key", again, err)
	}
	for _, r := range again.GetRewrapped() {
		if r.GetError() != "" || r.GetStore() == "secrets" && r.GetKeys() != 0 {
			t.Fatalf("rewrap_only: %v; want nothing left to rewrap in secrets and no error", again.GetRewrapped())
		}
	}
	for _, id := range resp.GetKeyIds() {
		if id != resp.GetCurrentKeyId() {
			if err := s.ring.Retire(id); err != nil {
				t.Fatal(err)
			}
		}
	}
	for _, tt := range []struct {
		owner, name string
		version     int64
		want        []byte
	}{{"alice", "A", 1, values[0]}, {"alice", "A", 2, values[1]}, {"bob", "B", 0, values[2]}} {
		got, _, err := s.store.Read(ctx, secrets.Reader{Owner: tt.owner, Function: "f"}, tt.name, tt.version)
		if err != nil || !bytes.Equal(got, tt.want) {
			t.Fatalf("%s/%s v%d after rotation and retiring the old keys: %v", tt.owner, tt.name, tt.version, err)
		}
	}
}
