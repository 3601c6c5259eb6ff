package sandbox

import (
	"context"
	"encoding/json"
	"fmt"
	"net/http"
	"net/http/httptest"
	"strings"
	"testing"
	"time"

	"github.com/hivemind/taskworker/internal/callhost"
	"github.com/hivemind/taskworker/internal/callhost/callhosttest"
	"github.com/hivemind/taskworker/internal/egress"
)

// A plugin built with another language's Extism PDK (Rust: go-sdk's
// http_headers.wasm fixture, whose http_get export makes a GET with the
// PDK's own HTTP call and returns the response's headers) works unchanged,
// through the pool and under the function's rules: allowed, it reaches the
// local server; not allowed, the call fails with the pool's reason.
func TestExtismPDKHTTPThroughThePool(t *testing.T) {
	pool := callhosttest.Start(t)
	ts := httptest.NewServer(http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		w.Header().Set("X-Served-By", "the-test-server")
		fmt.Fprint(w, "hello")
	}))
	t.Cleanup(ts.Close)
	ctx := context.Background()
	// Open the connections the calls use before the runtimes start, whose
	// checks count goroutines.
	warm, end := pool.Begin(ctx, egress.Call{Owner: "alice", Function: "headers", AllowHosts: []string{ts.URL}})
	if _, err := callhost.From(warm).Fetch(warm, &callhost.Request{URL: ts.URL}); err != nil {
		t.Fatal(err)
	}
	end()
	wasm := extismPlugin(t, "http_headers.wasm")
	input, _ := json.Marshal(map[string]string{"url": ts.URL + "/h"})
	isolations(t, DefaultConfig(), func(t *testing.T, cfg Config) {
		m := load(t, newTestRuntime(t, cfg), wasm, Spec{Export: "http_get"})
		for _, tt := range []struct {
			name  string
			allow string
			says  string
		}{
			{"allowed", ts.URL, ""},
			{"not allowed", "https://api.example.com", "permission_denied"},
		} {
			t.Run(tt.name, func(t *testing.T) {
				c, end := pool.Begin(ctx, egress.Call{Owner: "alice", Function: "headers", Caller: "alice", AllowHosts: []string{tt.allow}})
				defer end()
				c, cancel := context.WithTimeout(c, 30*time.Second)
				defer cancel()
				out, err := m.Call(c, input)
				if tt.says != "" {
					if err == nil || !strings.Contains(err.Error(), tt.says) || !strings.Contains(err.Error(), "not allowed") {
						t.Fatalf("%s, %v; want an error saying %q and \"not allowed\"", out, err, tt.says)
					}
					return
				}
				var headers map[string]string
				if err != nil || json.Unmarshal(out, &headers) != nil || headers["x-served-by"] != "the-test-server" {
					t.Fatalf("%s, %v; want the test server's headers", out, err)
				}
			})
		}
	})
}
