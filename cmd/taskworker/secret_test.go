package main

import (
	"context"
	"fmt"
	"io"
	"net"
	"net/http"
	"net/http/httptest"
	"net/netip"
	"os"
	"path/filepath"
	"strings"
	"testing"
	"time"

	clientv3 "go.etcd.io/etcd/client/v3"
	"google.golang.org/grpc"
	"google.golang.org/grpc/codes"
	"google.golang.org/grpc/credentials"
	"google.golang.org/grpc/status"

	v1 "github.com/hivemind/taskworker/api/taskworker/v1"
	"github.com/hivemind/taskworker/internal/auth"
	"github.com/hivemind/taskworker/internal/egress"
	"github.com/hivemind/taskworker/internal/etcdserver"
	"github.com/hivemind/taskworker/internal/keyring"
	"github.com/hivemind/taskworker/internal/pki"
	"github.com/hivemind/taskworker/internal/secrets"
)

// secretPool serves the SecretService, the KeyService and the
// EgressService over TLS, over a real etcd, as the pool registers them. Its
// tokens stand in for the pool's token store (not what these tests are
// about), and its authorization is internal/auth's table, as the pool's.
type secretPool struct {
	addr, userToken, adminToken string
	ca                          string // the CA certificate's file
}

type tokenUser struct {
	user string
	role v1.Role
}

type tokenUserKey struct{}

func startSecretPool(t *testing.T) *secretPool {
	t.Helper()
	ecfg := etcdserver.DefaultConfig(t.TempDir())
	ecfg.TickMs, ecfg.ElectionMs = 10, 100
	etcd, err := etcdserver.Start(context.Background(), ecfg)
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(etcd.Close)
	cli, err := clientv3.New(clientv3.Config{Endpoints: etcd.Endpoints(), DialTimeout: 5 * time.Second})
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { cli.Close() })
	ring, err := keyring.Open(filepath.Join(t.TempDir(), keyring.FileName))
	if err != nil {
		t.Fatal(err)
	}
	store := secrets.New(cli, "/tw/", ring)
	client, err := egress.New(egress.Config{AllowNets: []netip.Prefix{netip.MustParsePrefix("127.0.0.0/8")}})
	if err != nil {
		t.Fatal(err)
	}
	p := &secretPool{userToken: auth.NewToken(), adminToken: auth.NewToken()}
	tokens := map[string]tokenUser{p.userToken: {"alice", v1.Role_ROLE_USER}, p.adminToken: {"admin", v1.Role_ROLE_ADMIN}}
	authorize := func(ctx context.Context, req any, info *grpc.UnaryServerInfo, h grpc.UnaryHandler) (any, error) {
		token, err := auth.FromIncoming(ctx)
		if err != nil {
			return nil, status.Error(codes.Unauthenticated, err.Error())
		}
		u, ok := tokens[token]
		if !ok {
			return nil, status.Error(codes.Unauthenticated, "unknown token")
		}
		if err := auth.Authorize(info.FullMethod, u.role); err != nil {
			return nil, err
		}
		return h(context.WithValue(ctx, tokenUserKey{}, u), req)
	}
	checkUser := func(ctx context.Context, userID string) (string, error) {
		u := ctx.Value(tokenUserKey{}).(tokenUser)
		if userID == "" || userID == u.user {
			return u.user, nil
		}
		if u.role == v1.Role_ROLE_ADMIN {
			return userID, nil
		}
		return "", status.Errorf(codes.PermissionDenied, "user_id %q does not match the token's user %q", userID, u.user)
	}
	ca, err := pki.NewCA()
	if err != nil {
		t.Fatal(err)
	}
	cert, err := ca.IssueKeyPair(pki.Leaf{CommonName: pki.PoolCommonName, Hosts: []string{"127.0.0.1"}, Server: true, TTL: time.Hour})
	if err != nil {
		t.Fatal(err)
	}
	p.ca = filepath.Join(t.TempDir(), "ca.crt")
	if err := os.WriteFile(p.ca, ca.CertPEM(), 0o644); err != nil {
		t.Fatal(err)
	}
	srv := grpc.NewServer(grpc.Creds(credentials.NewServerTLSFromCert(&cert)), grpc.UnaryInterceptor(authorize))
	secrets.NewServer(store, checkUser, nil).Register(srv)
	secrets.NewKeyServer(ring, map[string]secrets.Rewrapper{"secrets": store}, nil).Register(srv)
	egress.NewServer(client, store, checkUser, nil).Register(srv)
	lis, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	go srv.Serve(lis)
	t.Cleanup(srv.Stop)
	p.addr = lis.Addr().String()
	return p
}

// The secret commands, audit, keys rotate and fetch against the services:
// what they print never holds the value.
func TestSecretCommands(t *testing.T) {
	p := startSecretPool(t)
	t.Setenv("TASKWORKER_HOME", t.TempDir())
	t.Setenv("TASKWORKER_POOL", p.addr)
	t.Setenv("TASKWORKER_TOKEN", p.userToken)
	t.Setenv("TASKWORKER_CA", p.ca)
	api := httptest.NewServer(http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		body, _ := io.ReadAll(r.Body)
		w.Header().Set("X-Echo", r.Header.Get("Authorization"))
		fmt.Fprintf(w, "%s %s auth=%s body=%s\n", r.Method, r.URL.Path, r.Header.Get("Authorization"), body)
	}))
	defer api.Close()
	const first, second = "sk_live_from_stdin", "sk_live_from_file"
	file := filepath.Join(t.TempDir(), "key")
	if err := os.WriteFile(file, []byte(second), 0o600); err != nil {
		t.Fatal(err)
	}
	tests := []struct {
		name   string
		stdin  string
		args   []string
		code   int
		stdout string // in stdout
		stderr string // in stderr
	}{
		{"put from stdin", first + "\n", []string{"secret", "put", "API_KEY"}, 0, "secret API_KEY: version 1", ""},
		{"put from a file", "", []string{"secret", "put", "API_KEY", "--from-file", file}, 0, "secret API_KEY: version 2", ""},
		{"put an empty value", "", []string{"secret", "put", "EMPTY"}, 1, "", "the value is empty"},
		{"put with the value on the command line", "", []string{"secret", "put", "API_KEY", first}, 1, "", "accepts 1 arg(s), received 2"},
		{"grant toward one host", "", []string{"secret", "grant", "API_KEY", "--function", "prices", "--host", api.URL}, 0, "granted to prices (to " + api.URL + ")", ""},
		{"grant without a function", "", []string{"secret", "grant", "API_KEY"}, 1, "", "--function is required"},
		{"grant a secret that does not exist", "", []string{"secret", "grant", "NOPE", "--function", "prices"}, 1, "", "no such secret"},
		{"ls", "", []string{"secret", "ls"}, 0, "API_KEY  2        2", ""},
		{"ls shows the grant", "", []string{"secret", "ls"}, 0, "prices (to " + api.URL + ")", ""},
		{"ls for another user", "", []string{"secret", "ls", "--user", "bob"}, 1, "", "does not match the token's user"},
		{"fetch an allowed host", "", []string{"fetch", api.URL + "/plain", "--allow-host", api.URL}, 0, "GET /plain auth= body=", "200 OK"},
		{"fetch with the secret injected", "", []string{"fetch", api.URL + "/api", "--allow-host", api.URL, "--function", "prices",
			"-H", "Authorization: Bearer {{secret:API_KEY}}", "-X", "post", "-d", "q=1", "-i"}, 0, "POST /api auth=Bearer [redacted:API_KEY] body=q=1", "(1 requests)"},
		{"fetch's headers are redacted too", "", []string{"fetch", api.URL, "--allow-host", api.URL, "--function", "prices",
			"-H", "Authorization: {{secret:API_KEY}}", "--include"}, 0, "X-Echo: [redacted:API_KEY]", ""},
		{"fetch a host not allowed", "", []string{"fetch", api.URL}, 1, "", "--allow-host " + api.URL},
		{"fetch a secret without its function", "", []string{"fetch", api.URL, "--allow-host", api.URL, "-H", "X-Key: {{secret:API_KEY}}"}, 1, "", "not granted"},
		{"fetch with a bad header", "", []string{"fetch", api.URL, "--allow-host", api.URL, "-H", "no colon"}, 1, "", "write it as Name: value"},
		{"fetch with a bad rule", "", []string{"fetch", api.URL, "--allow-host", "api.example.com"}, 1, "", "with a scheme"},
		{"audit", "", []string{"audit"}, 0, "API_KEY  2        prices    alice", ""},
		{"audit of another secret", "", []string{"audit", "--secret", "OTHER"}, 0, "TIME", ""},
		{"audit with a bad limit", "", []string{"audit", "--limit", "0"}, 1, "", "--limit 0: give 1 to 1000"},
		{"keys rotate as a user", "", []string{"keys", "rotate"}, 1, "", "use a token with role admin"},
		{"keys rotate as the admin", "", []string{"keys", "rotate", "--token", p.adminToken}, 0, "secrets: 2 data keys rewrapped", ""},
		{"keys rotate --rewrap-only", "", []string{"keys", "rotate", "--token", p.adminToken, "--rewrap-only"}, 0, "secrets: 0 data keys rewrapped", ""},
		{"the admin lists alice's", "", []string{"secret", "ls", "--user", "alice", "--token", p.adminToken, "--json"}, 0, `"API_KEY"`, ""},
		{"revoke", "", []string{"secret", "revoke", "API_KEY", "--function", "prices"}, 0, "revoked from prices; granted to -", ""},
		{"revoke again", "", []string{"secret", "revoke", "API_KEY", "--function", "prices"}, 1, "", "no such grant"},
		{"fetch after the revoke", "", []string{"fetch", api.URL, "--allow-host", api.URL, "--function", "prices", "-H", "X-Key: {{secret:API_KEY}}"}, 1, "", "not granted"},
		{"rm", "", []string{"secret", "rm", "API_KEY"}, 0, "deleted secret API_KEY", ""},
		{"rm again", "", []string{"secret", "rm", "API_KEY"}, 1, "", "no such secret"},
		{"a name that is a path", "", []string{"secret", "rm", "../bob/API_KEY"}, 1, "", "secret name"},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			code, stdout, stderr := runWithInput(t, tt.stdin, tt.args...)
			if code != tt.code || !strings.Contains(stdout, tt.stdout) || !strings.Contains(stderr, tt.stderr) {
				t.Fatalf("exit %d, stdout %q, stderr %q; want exit %d, %q in stdout, %q in stderr", code, stdout, stderr, tt.code, tt.stdout, tt.stderr)
			}
			for _, v := range []string{first, second} {
				if strings.Contains(stdout+stderr, v) {
					t.Fatalf("the command printed a secret's value: %q %q", stdout, stderr)
				}
			}
		})
	}
}
