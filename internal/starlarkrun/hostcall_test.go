package starlarkrun

import (
	"bytes"
	"context"
	"encoding/json"
	"fmt"
	"io"
	"net/http"
	"net/http/httptest"
	"os"
	"path/filepath"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/hivemind/taskworker/internal/callhost/callhosttest"
	"github.com/hivemind/taskworker/internal/egress"
)

const hostScript = `
def read(name):
    return secret(name)

def fetch(url):
    r = http.get(url, headers={"Authorization": "Bearer {{secret:TOKEN}}"})
    return {"status": r.status, "body": r.body, "type": r.headers.get("content-type", "")}

def post(url):
    return http.post(url, body="hi").body

def caught(name):
    # A refusal is a Starlark error: the script cannot catch it, so the call fails with it.
    return secret(name)
`

// The secret and http builtins, from a script in a real child process,
// through a Host backed by the real SecretService and EgressService: a
// granted read; refusals of an ungranted read, a call with no token and a
// finished call; a fetch with a secret injected toward the host its grant
// names and redacted from what the script gets; a host off the rules.
func TestHostBuiltins(t *testing.T) {
	p := newPool(t, testConfig(t)) // first, so that its goroutine check runs after the servers' cleanup
	pool := callhosttest.Start(t)
	var seen sync.Map // what the outside server received
	ts := httptest.NewServer(http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		body, _ := io.ReadAll(r.Body)
		seen.Store(r.Method, r.Header.Get("Authorization"))
		fmt.Fprintf(w, "%s auth=%s body=%s", r.Method, r.Header.Get("Authorization"), body)
	}))
	t.Cleanup(ts.Close)
	ctx := context.Background()
	key, token := []byte("starlark-key-value-1"), []byte("starlark-token-value-2")
	for name, v := range map[string][]byte{"KEY": key, "TOKEN": token} {
		if _, err := pool.Store.Put(ctx, "alice", name, v); err != nil {
			t.Fatal(err)
		}
	}
	if _, err := pool.Store.Grant(ctx, "alice", "KEY", "reader", nil); err != nil {
		t.Fatal(err)
	}
	if _, err := pool.Store.Grant(ctx, "alice", "TOKEN", "fetcher", []string{ts.URL}); err != nil {
		t.Fatal(err)
	}
	run := func(ctx context.Context, fn, args string) (string, error) {
		ctx, cancel := context.WithTimeout(ctx, 30*time.Second)
		defer cancel()
		out, err := p.Call(ctx, Request{Name: "host.star", Source: []byte(hostScript), Function: fn, Args: json.RawMessage(args)})
		return string(out), err
	}
	call := func(function string, allow ...string) (context.Context, func()) {
		return pool.Begin(ctx, egress.Call{Owner: "alice", Function: function, Caller: "bob", AllowHosts: allow})
	}
	url, _ := json.Marshal([]string{ts.URL + "/x"})
	tests := []struct {
		name     string
		ctx      func() (context.Context, func())
		fn, args string
		want     string   // the result, when the call succeeds
		says     []string // the error, when it fails
	}{
		{"a granted read", func() (context.Context, func()) { return call("reader") }, "read", `["KEY"]`, `"starlark-key-value-1"`, nil},
		{"a read without a grant", func() (context.Context, func()) { return call("stranger") }, "read", `["KEY"]`, "",
			[]string{"secret: permission_denied", "secret grant KEY --function stranger"}},
		{"a read of a secret granted for injection only", func() (context.Context, func()) { return call("fetcher", ts.URL) }, "caught", `["TOKEN"]`, "",
			[]string{"permission_denied", "{{secret:TOKEN}}"}},
		{"a call not through the pool", func() (context.Context, func()) { return ctx, func() {} }, "read", `["KEY"]`, "",
			[]string{"failed_precondition", "through the pool"}},
		{"a finished call", func() (context.Context, func()) {
			c, end := call("reader")
			end()
			return c, func() {}
		}, "read", `["KEY"]`, "", []string{"permission_denied", "unknown call token"}},
		{"a fetch with the secret injected", func() (context.Context, func()) { return call("fetcher", ts.URL) }, "fetch", string(url),
			`{"status":200,"body":"GET auth=Bearer [redacted:TOKEN] body=","type":"text/plain; charset=utf-8"}`, nil},
		{"a post", func() (context.Context, func()) { return call("fetcher", ts.URL) }, "post", string(url), `"POST auth= body=hi"`, nil},
		{"a host off the function's rules", func() (context.Context, func()) { return call("fetcher", "https://api.example.com") }, "post", string(url), "",
			[]string{"http.post: fetch: permission_denied", "not allowed"}},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			c, end := tt.ctx()
			defer end()
			got, err := run(c, tt.fn, tt.args)
			if tt.says == nil {
				if err != nil || got != tt.want {
					t.Fatalf("%s(%s) = %s, %v; want %s", tt.fn, tt.args, got, err, tt.want)
				}
				return
			}
			if err == nil {
				t.Fatalf("%s(%s) = %s, want an error", tt.fn, tt.args, got)
			}
			for _, s := range tt.says {
				if !strings.Contains(err.Error(), s) {
					t.Errorf("error %q does not say %q", err, s)
				}
			}
			if bytes.Contains([]byte(err.Error()), key) || bytes.Contains([]byte(err.Error()), token) {
				t.Errorf("the error holds a secret's value: %v", err)
			}
		})
	}
	if got, _ := seen.Load("GET"); got != "Bearer "+string(token) {
		t.Errorf("the outside server got Authorization %q, want the injected secret", got)
	}
	if logs := pool.Logs(); bytes.Contains(logs, key) || bytes.Contains(logs, token) {
		t.Errorf("the pool's debug logs hold a secret's value:\n%s", logs)
	}
	events, err := pool.Store.Audit(ctx, "alice", "", 10)
	if err != nil || len(events) != 2 {
		t.Fatalf("audit: %+v, %v; want the granted read and the injection", events, err)
	}
}

// The examples that use the host builtins compile against them.
func TestHostExamplesCompile(t *testing.T) {
	src, err := os.ReadFile(filepath.Join("..", "..", "examples", "starlark", "weather.star"))
	if err != nil {
		t.Fatal(err)
	}
	if err := Check("weather.star", src, "weather"); err != nil {
		t.Fatal(err)
	}
}
