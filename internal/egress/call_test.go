package egress_test

import (
	"bytes"
	"context"
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
	"github.com/hivemind/taskworker/internal/callhost/callhosttest"
	"github.com/hivemind/taskworker/internal/egress"
	"github.com/hivemind/taskworker/internal/secrets"
)

// The tests' stand-in for the pool's worker authentication (a certificate,
// which is not what they test): the worker's id comes from metadata.
const testWorkerKey = "x-test-worker"

func peerFromMetadata(ctx context.Context) (string, error) {
	md, _ := metadata.FromIncomingContext(ctx)
	if v := md.Get(testWorkerKey); len(v) > 0 {
		return v[0], nil
	}
	return "", status.Error(codes.Unauthenticated, "no worker certificate")
}

func asWorker(id string) context.Context {
	return metadata.AppendToOutgoingContext(context.Background(), testWorkerKey, id)
}

// fakeCalls stands in for the pool's calls in flight: token -> call, and
// the worker that runs it.
type fakeCalls struct {
	mu    sync.Mutex
	calls map[string]fakeCall
}

type fakeCall struct {
	worker string
	call   egress.Call
}

func (f *fakeCalls) add(token, worker string, c egress.Call) {
	f.mu.Lock()
	defer f.mu.Unlock()
	if f.calls == nil {
		f.calls = map[string]fakeCall{}
	}
	f.calls[token] = fakeCall{worker, c}
}

func (f *fakeCalls) finish(token string) {
	f.mu.Lock()
	defer f.mu.Unlock()
	delete(f.calls, token)
}

func (f *fakeCalls) ResolveCall(_ context.Context, worker, token string) (egress.Call, error) {
	f.mu.Lock()
	defer f.mu.Unlock()
	c, ok := f.calls[token]
	switch {
	case !ok:
		return egress.Call{}, egress.ErrUnknownCall
	case c.worker != worker:
		return egress.Call{}, egress.ErrWrongWorker
	}
	return c.call, nil
}

// callHarness is the EgressService and the SecretService, serving calls'
// requests, on a real gRPC server over TCP, with a real secrets store
// over a real etcd, logging at debug level.
type callHarness struct {
	store   *secrets.Store
	calls   *fakeCalls
	logs    *lockedBuffer
	egress  v1.EgressServiceClient
	secrets v1.SecretServiceClient
}

func serveCalls(t *testing.T, cfg egress.Config) *callHarness {
	t.Helper()
	store := callhosttest.NewStore(t)
	client, err := egress.New(cfg)
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(client.Close)
	logs := &lockedBuffer{}
	log := slog.New(slog.NewTextHandler(logs, &slog.HandlerOptions{Level: slog.LevelDebug}))
	calls := &fakeCalls{}
	srv := grpc.NewServer()
	egress.NewServer(client, store, alice, log).ServeCalls(calls, peerFromMetadata).Register(srv)
	secrets.NewServer(store, alice, log).ServeCalls(calls, peerFromMetadata).Register(srv)
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
	t.Cleanup(func() {
		if l := logs.String(); l == "" || strings.Contains(l, string(secretValue)) {
			t.Errorf("the servers' debug logs are empty or hold the secret's value:\n%s", l)
		}
	})
	return &callHarness{store: store, calls: calls, logs: logs, egress: v1.NewEgressServiceClient(conn), secrets: v1.NewSecretServiceClient(conn)}
}

// A call's outbound requests: under its function's rules, its secret
// injected toward the host its grant names and redacted from what comes
// back, one read of the secret for the whole call, one budget of requests
// for the whole call; and only for the worker that runs the call, while it
// runs.
func TestFetchForCall(t *testing.T) {
	ts := echo(t)
	h := serveCalls(t, egress.Config{AllowNets: loopback(), MaxRequestsPerCall: 3})
	ctx := context.Background()
	if _, err := h.store.Put(ctx, "alice", "TOKEN", secretValue); err != nil {
		t.Fatal(err)
	}
	if _, err := h.store.Grant(ctx, "alice", "TOKEN", "fetcher", []string{ts.URL}); err != nil {
		t.Fatal(err)
	}
	done := make(chan struct{})
	h.calls.add("tok-1", "w1", egress.Call{Owner: "alice", Function: "fetcher", Caller: "bob", AllowHosts: []string{ts.URL}, Done: done})
	w1 := asWorker("w1")
	fetch := func(w context.Context, token, url string) (*v1.FetchResponse, error) {
		return h.egress.FetchForCall(w, &v1.FetchForCallRequest{CallToken: token, Request: &v1.FetchRequest{
			Url: url, Headers: []*v1.HTTPHeader{{Name: "Authorization", Value: "Bearer {{secret:TOKEN}}"}},
		}})
	}
	for i := range 2 {
		resp, err := fetch(w1, "tok-1", ts.URL+"/api")
		if err != nil {
			t.Fatal(err)
		}
		if want := "GET /api auth=Bearer [redacted:TOKEN] body="; string(resp.GetBody()) != want || resp.GetRequests() != int32(i+1) {
			t.Fatalf("request %d: body %q after %d requests, want %q after %d", i, resp.GetBody(), resp.GetRequests(), want, i+1)
		}
		if b, _ := proto.Marshal(resp); bytes.Contains(b, secretValue) {
			t.Fatalf("the response holds the secret's value: %v", resp)
		}
	}
	events, err := h.store.Audit(ctx, "alice", "TOKEN", 10)
	if err != nil || len(events) != 1 || !events[0].Injected || events[0].Function != "fetcher" || events[0].Caller != "bob" {
		t.Fatalf("audit: %+v, %v; want one injected read by fetcher for bob's call", events, err)
	}

	refused := []struct {
		name   string
		worker context.Context
		token  string
		url    string
		code   codes.Code
		says   string
	}{
		{"a host off the function's rules", w1, "tok-1", "https://api.example.com/", codes.PermissionDenied, "not allowed"},
		{"another worker's call", asWorker("w2"), "tok-1", ts.URL, codes.PermissionDenied, "another worker"},
		{"an unknown token", w1, "tok-guessed", ts.URL, codes.PermissionDenied, "unknown call"},
		{"no token", w1, "", ts.URL, codes.PermissionDenied, "no call token"},
		{"no worker certificate", context.Background(), "tok-1", ts.URL, codes.Unauthenticated, "certificate"},
		// The third request of the call, after two: its budget is 3.
		{"the last request of the call's budget", w1, "tok-1", ts.URL, codes.OK, ""},
		{"past the call's budget", w1, "tok-1", ts.URL, codes.ResourceExhausted, "3 outbound requests"},
	}
	for _, tt := range refused {
		t.Run(tt.name, func(t *testing.T) {
			_, err := fetch(tt.worker, tt.token, tt.url)
			if st := status.Convert(err); st.Code() != tt.code || !strings.Contains(st.Message(), tt.says) {
				t.Fatalf("%v, want %s saying %q", err, tt.code, tt.says)
			}
		})
	}

	// The call ends: its token no longer works, and the next call has a
	// budget of its own.
	close(done)
	h.calls.finish("tok-1")
	if _, err := fetch(w1, "tok-1", ts.URL); status.Code(err) != codes.PermissionDenied {
		t.Fatalf("a finished call's token: %v, want PermissionDenied", err)
	}
	h.calls.add("tok-2", "w1", egress.Call{Owner: "alice", Function: "fetcher", Caller: "bob", AllowHosts: []string{ts.URL}, Done: make(chan struct{})})
	if resp, err := fetch(w1, "tok-2", ts.URL); err != nil || resp.GetRequests() != 1 {
		t.Fatalf("the next call: %v, %v; want its first request", resp, err)
	}
}

// A call's secret read: under a grant without hosts only, recorded with
// the call's caller; nothing for another worker, an unknown call, a secret
// not granted or granted for injection only.
func TestReadForCall(t *testing.T) {
	h := serveCalls(t, egress.Config{})
	ctx := context.Background()
	if _, err := h.store.Put(ctx, "alice", "KEY", secretValue); err != nil {
		t.Fatal(err)
	}
	if _, err := h.store.Put(ctx, "alice", "OTHER", []byte("other-value")); err != nil {
		t.Fatal(err)
	}
	if _, err := h.store.Grant(ctx, "alice", "KEY", "reader", nil); err != nil {
		t.Fatal(err)
	}
	if _, err := h.store.Grant(ctx, "alice", "OTHER", "reader", []string{"https://api.example.com"}); err != nil {
		t.Fatal(err)
	}
	h.calls.add("tok", "w1", egress.Call{Owner: "alice", Function: "reader", Caller: "carol"})
	h.calls.add("tok-stranger", "w1", egress.Call{Owner: "alice", Function: "stranger", Caller: "carol"})
	resp, err := h.secrets.ReadForCall(asWorker("w1"), &v1.ReadForCallRequest{CallToken: "tok", Name: "KEY"})
	if err != nil || !bytes.Equal(resp.GetValue(), secretValue) || resp.GetVersion() != 1 {
		t.Fatalf("ReadForCall: %v, %v", resp, err)
	}
	events, err := h.store.Audit(ctx, "alice", "KEY", 10)
	if err != nil || len(events) != 1 || events[0].Injected || events[0].Function != "reader" || events[0].Caller != "carol" || events[0].Version != 1 {
		t.Fatalf("audit: %+v, %v; want one read by reader for carol's call", events, err)
	}
	refused := []struct {
		name   string
		worker string
		token  string
		secret string
		code   codes.Code
		says   string
	}{
		{"another worker's call", "w2", "tok", "KEY", codes.PermissionDenied, "another worker"},
		{"an unknown token", "w1", "nope", "KEY", codes.PermissionDenied, "unknown call"},
		{"no token", "w1", "", "KEY", codes.PermissionDenied, "no call token"},
		{"a function without a grant", "w1", "tok-stranger", "KEY", codes.PermissionDenied, "secret grant KEY --function stranger"},
		{"a grant for injection only", "w1", "tok", "OTHER", codes.PermissionDenied, "{{secret:OTHER}}"},
		{"no such secret", "w1", "tok", "MISSING", codes.NotFound, "MISSING"},
	}
	for _, tt := range refused {
		t.Run(tt.name, func(t *testing.T) {
			_, err := h.secrets.ReadForCall(asWorker(tt.worker), &v1.ReadForCallRequest{CallToken: tt.token, Name: tt.secret})
			if st := status.Convert(err); st.Code() != tt.code || !strings.Contains(st.Message(), tt.says) {
				t.Fatalf("%v, want %s saying %q", err, tt.code, tt.says)
			}
		})
	}
	if events, _ := h.store.Audit(ctx, "alice", "", 10); len(events) != 1 {
		t.Fatalf("%d reads recorded, want the one granted", len(events))
	}
}
