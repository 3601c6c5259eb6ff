package taskworker_test

import (
	"bytes"
	"context"
	"fmt"
	"io"
	"net/http"
	"net/http/httptest"
	"strings"
	"testing"

	"google.golang.org/grpc/codes"
	"google.golang.org/grpc/status"

	"github.com/hivemind/taskworker"
	"github.com/hivemind/taskworker/internal/callhost/callhosttest"
	"github.com/hivemind/taskworker/internal/egress"
)

// A native function's Secret and Fetch, through a Host backed by the real
// secrets and egress services: a granted read, an ungranted one, a fetch
// whose secret reaches the server and comes back redacted, a host off the
// rules, and a call not through the pool.
func TestSecretAndFetch(t *testing.T) {
	pool := callhosttest.Start(t)
	ts := httptest.NewServer(http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		body, _ := io.ReadAll(r.Body)
		fmt.Fprintf(w, "%s %s auth=%s body=%s", r.Method, r.URL.RequestURI(), r.Header.Get("Authorization"), body)
	}))
	t.Cleanup(ts.Close)
	ctx := context.Background()
	value := []byte("native-secret-value")
	if _, err := pool.Store.Put(ctx, "alice", "API_KEY", value); err != nil {
		t.Fatal(err)
	}
	if _, err := pool.Store.Grant(ctx, "alice", "API_KEY", "reader", nil); err != nil {
		t.Fatal(err)
	}
	if _, err := pool.Store.Grant(ctx, "alice", "API_KEY", "caller", []string{ts.URL}); err != nil {
		t.Fatal(err)
	}

	reader, end := pool.Begin(ctx, egress.Call{Owner: "alice", Function: "reader", Caller: "bob"})
	defer end()
	if v, err := taskworker.Secret(reader, "API_KEY"); err != nil || !bytes.Equal(v, value) {
		t.Fatalf("Secret: %q, %v", v, err)
	}
	stranger, end2 := pool.Begin(ctx, egress.Call{Owner: "alice", Function: "stranger", Caller: "bob"})
	defer end2()
	if _, err := taskworker.Secret(stranger, "API_KEY"); status.Code(err) != codes.PermissionDenied {
		t.Fatalf("an ungranted read: %v, want PermissionDenied", err)
	}
	if _, err := taskworker.Secret(ctx, "API_KEY"); status.Code(err) != codes.FailedPrecondition || !strings.Contains(err.Error(), "through the pool") {
		t.Fatalf("a call not through the pool: %v, want FailedPrecondition", err)
	}

	caller, end3 := pool.Begin(ctx, egress.Call{Owner: "alice", Function: "caller", Caller: "bob", AllowHosts: []string{ts.URL}})
	defer end3()
	req, _ := http.NewRequest("POST", ts.URL+"/v1?key={{secret:API_KEY}}", strings.NewReader("hello"))
	resp, err := taskworker.Fetch(caller, req)
	if err != nil {
		t.Fatal(err)
	}
	body, _ := io.ReadAll(resp.Body)
	if want := "POST /v1?key=[redacted:API_KEY] auth= body=hello"; resp.StatusCode != 200 || string(body) != want {
		t.Fatalf("Fetch: %d %q, want 200 %q", resp.StatusCode, body, want)
	}
	req, _ = http.NewRequest("GET", "https://api.example.com/", nil)
	if _, err := taskworker.Fetch(caller, req); status.Code(err) != codes.PermissionDenied || !strings.Contains(err.Error(), "not allowed") {
		t.Fatalf("a host off the rules: %v, want PermissionDenied", err)
	}
	if logs := pool.Logs(); bytes.Contains(logs, value) {
		t.Errorf("the pool's debug logs hold the secret's value:\n%s", logs)
	}
}
