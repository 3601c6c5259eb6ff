package egress_test

import (
	"bytes"
	"context"
	"fmt"
	"io"
	"log/slog"
	"net"
	"net/http"
	"net/http/httptest"
	"net/netip"
	"strings"
	"sync"
	"testing"

	"google.golang.org/grpc"
	"google.golang.org/grpc/codes"
	"google.golang.org/grpc/credentials/insecure"
	"google.golang.org/grpc/status"
	"google.golang.org/protobuf/proto"

	v1 "github.com/hivemind/taskworker/api/taskworker/v1"
	"github.com/hivemind/taskworker/internal/callhost/callhosttest"
	"github.com/hivemind/taskworker/internal/egress"
	"github.com/hivemind/taskworker/internal/secrets"
)

// The value the injection tests keep in the secrets store.
var secretValue = []byte("sk_live_egress_server_value")

// lockedBuffer is a log sink the server's goroutines write to.
type lockedBuffer struct {
	mu sync.Mutex
	b  bytes.Buffer
}

func (l *lockedBuffer) Write(p []byte) (int, error) {
	l.mu.Lock()
	defer l.mu.Unlock()
	return l.b.Write(p)
}

func (l *lockedBuffer) String() string {
	l.mu.Lock()
	defer l.mu.Unlock()
	return l.b.String()
}

// alice is every request's user: the pool's user_id rule is not what these
// tests are about.
func alice(_ context.Context, userID string) (string, error) {
	if userID != "" && userID != "alice" {
		return "", status.Errorf(codes.PermissionDenied, "user_id %q is not the token's user", userID)
	}
	return "alice", nil
}

// echo is the outside world: it answers with what it was sent.
func echo(t *testing.T) *httptest.Server {
	ts := httptest.NewServer(http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		body, _ := io.ReadAll(r.Body)
		w.Header().Set("X-Seen-Authorization", r.Header.Get("Authorization"))
		fmt.Fprintf(w, "%s %s auth=%s body=%s", r.Method, r.URL.Path, r.Header.Get("Authorization"), body)
	}))
	t.Cleanup(ts.Close)
	return ts
}

// egressHarness is the EgressService on a real gRPC server over TCP, with a
// real secrets store over a real etcd, logging at debug level.
type egressHarness struct {
	store  *secrets.Store
	logs   *lockedBuffer
	client v1.EgressServiceClient
}

func serveEgress(t *testing.T, cfg egress.Config) *egressHarness {
	t.Helper()
	store := callhosttest.NewStore(t)
	client, err := egress.New(cfg)
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(client.Close)
	logs := &lockedBuffer{}
	log := slog.New(slog.NewTextHandler(logs, &slog.HandlerOptions{Level: slog.LevelDebug}))
	srv := grpc.NewServer()
	egress.NewServer(client, store, alice, log).Register(srv)
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
	h := &egressHarness{store: store, logs: logs, client: v1.NewEgressServiceClient(conn)}
	t.Cleanup(func() {
		if l := logs.String(); l == "" || strings.Contains(l, string(secretValue)) {
			t.Errorf("the server's debug logs are empty or hold the secret's value:\n%s", l)
		}
	})
	return h
}

func loopback() []netip.Prefix { return []netip.Prefix{netip.MustParsePrefix("127.0.0.0/8")} }

// Fetch over gRPC, as `taskworker fetch` tries a policy: an allowed host
// answers (the test server is on loopback, which the operator allowed by
// an explicit exception); a host off the allowlist and a loopback address
// without the exception are refused, naming the rule.
func TestFetchOverGRPC(t *testing.T) {
	ts := echo(t)
	open := serveEgress(t, egress.Config{AllowNets: loopback()})
	strict := serveEgress(t, egress.Config{})
	ctx := context.Background()
	tests := []struct {
		name   string
		h      *egressHarness
		req    *v1.FetchRequest
		code   codes.Code
		says   []string
		answer string
	}{
		{"an allowed host", open, &v1.FetchRequest{Url: ts.URL + "/hello", AllowHosts: []string{ts.URL}},
			codes.OK, nil, "GET /hello auth= body="},
		{"a POST with a body and a header", open, &v1.FetchRequest{Method: "POST", Url: ts.URL + "/p", AllowHosts: []string{ts.URL},
			Headers: []*v1.HTTPHeader{{Name: "Authorization", Value: "Bearer plain"}}, Body: []byte("hi")},
			codes.OK, nil, "POST /p auth=Bearer plain body=hi"},
		{"a host off the allowlist", open, &v1.FetchRequest{Url: ts.URL, AllowHosts: []string{"https://api.example.com"}},
			codes.PermissionDenied, []string{"not allowed", "--allow-host", "https://api.example.com"}, ""},
		{"no allowlist at all", open, &v1.FetchRequest{Url: ts.URL},
			codes.PermissionDenied, []string{"may reach no host", "--allow-host " + ts.URL}, ""},
		{"loopback without the operator's exception", strict, &v1.FetchRequest{Url: ts.URL, AllowHosts: []string{ts.URL}},
			codes.PermissionDenied, []string{"127.0.0.1", "loopback", "--egress-allow-net 127.0.0.0/8"}, ""},
		{"the metadata address, allowed by the deployer", open, &v1.FetchRequest{Url: "http://169.254.169.254/latest", AllowHosts: []string{"http://169.254.169.254"}},
			codes.PermissionDenied, []string{"link-local", "--egress-allow-net 169.254.0.0/16"}, ""},
		{"an address spelt as a number", open, &v1.FetchRequest{Url: "http://2130706433/", AllowHosts: []string{"http://2130706433"}},
			codes.InvalidArgument, []string{"127.0.0.1"}, ""},
		{"a rule without a scheme", open, &v1.FetchRequest{Url: ts.URL, AllowHosts: []string{"127.0.0.1"}},
			codes.InvalidArgument, []string{"scheme"}, ""},
		{"a user_id not the caller's", open, &v1.FetchRequest{UserId: "bob", Url: ts.URL, AllowHosts: []string{ts.URL}},
			codes.PermissionDenied, []string{"bob"}, ""},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			resp, err := tt.h.client.Fetch(ctx, tt.req)
			st := status.Convert(err)
			if st.Code() != tt.code {
				t.Fatalf("%v, want %s", err, tt.code)
			}
			for _, s := range tt.says {
				if !strings.Contains(st.Message(), s) {
					t.Errorf("message %q does not say %q", st.Message(), s)
				}
			}
			if tt.answer != "" && (resp.GetStatusCode() != 200 || string(resp.GetBody()) != tt.answer || resp.GetRequests() != 1) {
				t.Errorf("answer %d %q after %d requests, want 200 %q after 1", resp.GetStatusCode(), resp.GetBody(), resp.GetRequests(), tt.answer)
			}
		})
	}
}

// A request tried as one of the user's functions carries its secret to a
// host its grant names: the server gets the value, the response that
// echoes it comes back redacted, the read is in the audit log, and nothing
// returned or logged holds the value.
func TestFetchInjectsGrantedSecret(t *testing.T) {
	ts := echo(t)
	h := serveEgress(t, egress.Config{AllowNets: loopback()})
	ctx := context.Background()
	if _, err := h.store.Put(ctx, "alice", "TOKEN", secretValue); err != nil {
		t.Fatal(err)
	}
	if _, err := h.store.Grant(ctx, "alice", "TOKEN", "caller", []string{ts.URL}); err != nil {
		t.Fatal(err)
	}
	if _, err := h.store.Grant(ctx, "alice", "TOKEN", "elsewhere", []string{"https://api.example.com"}); err != nil {
		t.Fatal(err)
	}
	if _, err := h.store.Grant(ctx, "alice", "TOKEN", "reader", nil); err != nil {
		t.Fatal(err)
	}
	auth := []*v1.HTTPHeader{{Name: "Authorization", Value: "Bearer {{secret:TOKEN}}"}}
	resp, err := h.client.Fetch(ctx, &v1.FetchRequest{Url: ts.URL + "/api", AllowHosts: []string{ts.URL}, Headers: auth, Function: "caller"})
	if err != nil {
		t.Fatal(err)
	}
	if want := "GET /api auth=Bearer [redacted:TOKEN] body="; string(resp.GetBody()) != want {
		t.Errorf("body %q, want %q (the server saw the value, the answer has it redacted)", resp.GetBody(), want)
	}
	b, _ := proto.Marshal(resp)
	if bytes.Contains(b, secretValue) {
		t.Fatalf("the response holds the secret's value: %v", resp)
	}
	events, err := h.store.Audit(ctx, "alice", "TOKEN", 10)
	if err != nil || len(events) != 1 || !events[0].Injected || events[0].Function != "caller" || events[0].Caller != "alice" {
		t.Fatalf("audit: %+v, %v; want one injected read by caller for alice", events, err)
	}
	refused := []struct {
		name     string
		function string
		says     string
	}{
		{"no function: no secrets", "", "not granted"},
		{"a function whose grant names another host", "elsewhere", "may be sent only to https://api.example.com"},
		{"a function with no grant", "stranger", "not granted"},
		// Its grant follows the function's deployed rules, which a request
		// by hand does not carry: else whoever may act for alice could send
		// the value to a host of their own and read it there.
		{"a function whose grant names no host", "reader", "its grant names no host"},
	}
	for _, tt := range refused {
		t.Run(tt.name, func(t *testing.T) {
			_, err := h.client.Fetch(ctx, &v1.FetchRequest{Url: ts.URL, AllowHosts: []string{ts.URL}, Headers: auth, Function: tt.function})
			if st := status.Convert(err); st.Code() != codes.PermissionDenied || !strings.Contains(st.Message(), tt.says) {
				t.Fatalf("%v, want PermissionDenied saying %q", err, tt.says)
			}
		})
	}
	if events, _ := h.store.Audit(ctx, "alice", "TOKEN", 10); len(events) != 1 {
		t.Fatalf("%d reads recorded, want the one that went out", len(events))
	}
}
