package sandbox

import (
	"bytes"
	"context"
	"errors"
	"fmt"
	"io"
	"net/http"
	"net/http/httptest"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/hivemind/taskworker/internal/callhost"
	"github.com/hivemind/taskworker/internal/callhost/callhosttest"
	"github.com/hivemind/taskworker/internal/egress"
)

// The host functions that reach outside, in both isolations (a child
// process asks the worker over its pipe), through a Host backed by the
// real SecretService and EgressService: a granted secret_get; refusals of
// an ungranted read, a call with no token and a finished call, with
// last_error saying why; http_fetch with a secret injected toward the host
// its grant names and redacted from what the guest reads; Extism's
// http_request through the same path; a host off the rules.
func TestHostFunctionsReachOutThroughThePool(t *testing.T) {
	pool := callhosttest.Start(t)
	var seen sync.Map
	ts := httptest.NewServer(http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		body, _ := io.ReadAll(r.Body)
		seen.Store(r.Method, r.Header.Get("Authorization"))
		w.Header()["Date"] = nil
		fmt.Fprintf(w, "%s auth=%s body=%s", r.Method, r.Header.Get("Authorization"), body)
	}))
	t.Cleanup(ts.Close)
	ctx := context.Background()
	key, token := []byte("wasm-key-value-1"), []byte("wasm-token-value-2")
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
	wasm := guestWasm(t, "./internal/sandbox/testdata/hostcalls")
	call := func(function string, allow ...string) func() (context.Context, func()) {
		return func() (context.Context, func()) {
			return pool.Begin(ctx, egress.Call{Owner: "alice", Function: function, Caller: "bob", AllowHosts: allow})
		}
	}
	url := fmt.Sprintf("[%q]", ts.URL+"/x")
	// Open the connections the calls use (to the pool's services, and
	// the pool's to the outside server) before the runtimes start, whose
	// checks count goroutines.
	warm, end := call("fetcher", ts.URL)()
	if _, err := callhost.From(warm).Fetch(warm, &callhost.Request{URL: ts.URL}); err != nil {
		t.Fatal(err)
	}
	end()
	tests := []struct {
		name          string
		ctx           func() (context.Context, func())
		export, input string
		want          string   // the output, when the call succeeds
		says          []string // the error, when it fails
	}{
		{"a granted read", call("reader"), "secret", "KEY", string(key), nil},
		{"a read without a grant", call("stranger"), "secret", "KEY", "",
			[]string{"permission_denied", "secret grant KEY --function stranger"}},
		{"a call not through the pool", func() (context.Context, func()) { return ctx, func() {} }, "secret", "KEY", "",
			[]string{"failed_precondition", "through the pool"}},
		{"a finished call", func() (context.Context, func()) {
			c, end := call("reader")()
			end()
			return c, func() {}
		}, "secret", "KEY", "", []string{"permission_denied", "unknown call token"}},
		{"a fetch with the secret injected", call("fetcher", ts.URL), "fetch", url,
			`"{\"status\":200,\"headers\":{\"Content-Length\":\"` + fmt.Sprint(len("GET auth=Bearer [redacted:TOKEN] body=")) + `\",\"Content-Type\":\"text/plain; charset=utf-8\"},\"url\":\"` + ts.URL + `/x\"} GET auth=Bearer [redacted:TOKEN] body="`, nil},
		{"Extism's http_request", call("fetcher", ts.URL), "extism_post", url, `"200 POST auth= body=from-extism"`, nil},
		{"a host off the function's rules", call("fetcher", "https://api.example.com"), "fetch", url, "",
			[]string{"permission_denied", "not allowed"}},
		{"Extism's http_request to a host off the rules", call("fetcher", "https://api.example.com"), "extism_post", url, "",
			[]string{"extism http_request: permission_denied", "not allowed"}},
		{"a request that is not JSON", call("fetcher", ts.URL), "bad_request", "", "", []string{"invalid_argument", "not JSON"}},
	}
	isolations(t, DefaultConfig(), func(t *testing.T, cfg Config) {
		r := newTestRuntime(t, cfg)
		modules := map[string]*Module{}
		for _, tt := range tests {
			if modules[tt.export] == nil {
				modules[tt.export] = load(t, r, wasm, Spec{Export: tt.export})
			}
		}
		for _, tt := range tests {
			t.Run(tt.name, func(t *testing.T) {
				c, end := tt.ctx()
				defer end()
				c, cancel := context.WithTimeout(c, 30*time.Second)
				defer cancel()
				out, err := modules[tt.export].Call(c, []byte(tt.input))
				if tt.says == nil {
					if err != nil || string(out) != tt.want {
						t.Fatalf("%s(%s) = %s, %v; want %s", tt.export, tt.input, out, err, tt.want)
					}
					return
				}
				if err == nil {
					t.Fatalf("%s(%s) = %s, want an error", tt.export, tt.input, out)
				}
				for _, s := range tt.says {
					if !strings.Contains(err.Error(), s) {
						t.Errorf("error %q does not say %q", err, s)
					}
				}
				if bytes.Contains([]byte(err.Error()), key) || bytes.Contains([]byte(err.Error()), token) {
					t.Errorf("the error holds a secret's value: %v", err)
				}
				var ge *GuestError
				if strings.HasPrefix(tt.name, "Extism") && errors.As(err, &ge) {
					t.Errorf("a refused http_request is the guest's error, want a trap: %v", err)
				}
			})
		}
		if !cfg.isolated() {
			return
		}
		// Calls sent to a child in one batch: the child reads the calls
		// behind the first while it waits for the first's secret, and
		// each call's request is served as that call's, never another's:
		// calls of a function without the grant, batched with those of
		// the function that has it, are refused.
		t.Run("reads in a batch", func(t *testing.T) {
			m := load(t, r, wasm, Spec{Export: "secret", Concurrency: 1})
			for round := 0; m.Stats().Batched == 0; round++ {
				if round == 5 {
					t.Fatalf("no batch formed in %d rounds of 8 calls at once: %+v", round, m.Stats())
				}
				var wg sync.WaitGroup
				for i := range 8 {
					function := []string{"reader", "stranger"}[i%2]
					wg.Go(func() {
						c, end := call(function)()
						defer end()
						c, cancel := context.WithTimeout(c, 30*time.Second)
						defer cancel()
						out, err := m.Call(c, []byte("KEY"))
						switch {
						case function == "reader" && (err != nil || string(out) != string(key)):
							t.Errorf("secret(KEY) for the granted function = %s, %v; want the secret", out, err)
						case function == "stranger" && (err == nil || !strings.Contains(err.Error(), "permission_denied")):
							t.Errorf("secret(KEY) for a function without the grant = %s, %v; want permission_denied", out, err)
						}
					})
				}
				wg.Wait()
			}
		})
	})
	if got, _ := seen.Load("GET"); got != "Bearer "+string(token) && !t.Failed() {
		t.Errorf("the outside server got Authorization %q, want the injected secret", got)
	}
	if logs := pool.Logs(); bytes.Contains(logs, key) || bytes.Contains(logs, token) {
		t.Errorf("the pool's debug logs hold a secret's value:\n%s", logs)
	}
}
