package egress

import (
	"bytes"
	"compress/gzip"
	"context"
	"fmt"
	"io"
	"net/http"
	"strings"
	"sync"
	"testing"

	"google.golang.org/grpc/codes"

	"github.com/hivemind/taskworker/internal/serving"
)

const secretValue = "sk-live-0123456789abcdef"

// received records what the test server got, to show that the value did
// reach it.
type received struct {
	mu   sync.Mutex
	seen []string
}

func (r *received) add(req *http.Request) {
	r.mu.Lock()
	defer r.mu.Unlock()
	r.seen = append(r.seen, req.Header.Get("Authorization")+" "+req.URL.RawQuery)
}

func (r *received) all() string {
	r.mu.Lock()
	defer r.mu.Unlock()
	return strings.Join(r.seen, "\n")
}

// A server that echoes the secret back every way it can: in the body (split
// across two writes flushed apart), in headers, gzipped when asked, in a
// redirect's Location, in a trailer.
func echoSecrets(rec *received, port *string) http.HandlerFunc {
	return func(w http.ResponseWriter, r *http.Request) {
		rec.add(r)
		auth := r.Header.Get("Authorization")
		key := r.URL.Query().Get("key")
		switch r.URL.Path {
		case "/split":
			w.Header().Set("X-Echo", auth)
			w.Header().Set("X-Key-"+key, "1")
			w.Header().Set("Trailer", "X-Trailer")
			half := len(auth) / 2
			io.WriteString(w, "start "+auth[:half])
			w.(http.Flusher).Flush()
			io.WriteString(w, auth[half:]+" middle "+key+" end")
			w.Header().Set("X-Trailer", key)
		case "/gzip":
			if strings.Contains(r.Header.Get("Accept-Encoding"), "gzip") {
				w.Header().Set("Content-Encoding", "gzip")
				zw := gzip.NewWriter(w)
				io.WriteString(zw, "zipped "+auth)
				zw.Close()
				return
			}
			io.WriteString(w, "plain "+auth)
		case "/br":
			w.Header().Set("Content-Encoding", "br")
			io.WriteString(w, "pretend-brotli "+auth)
		case "/leak-location":
			http.Redirect(w, r, "http://not-allowed.test.example/?stolen="+strings.TrimPrefix(auth, "Bearer "), http.StatusFound)
		case "/to-ungranted":
			http.Redirect(w, r, "http://other.test.example:"+*port+"/split", http.StatusFound)
		case "/to-granted":
			http.Redirect(w, r, "/split", http.StatusTemporaryRedirect)
		default:
			io.WriteString(w, "ok")
		}
	}
}

func TestSecretInjectionAndRedaction(t *testing.T) {
	rec := &received{}
	var port string
	srv := newServer(t, echoSecrets(rec, &port))
	port = srv.port
	res := newResolver(map[string][]string{"api.test.example": {"127.0.0.1"}, "other.test.example": {"127.0.0.1"}})
	c := newClient(t, Config{Resolver: res, AllowNets: loopback})
	api := "http://api.test.example:" + port
	other := "http://other.test.example:" + port
	store := &secretStore{values: map[string]string{"KEY": secretValue}}
	scope := func() *Scope {
		return c.NewScope(ScopeConfig{
			Allow:   mustAllow(t, api, other, "http://not-allowed-either.test.example"),
			Grants:  Grants{"KEY": mustAllow(t, api)},
			Secrets: store,
		})
	}
	auth := http.Header{"Authorization": {"Bearer {{secret:KEY}}"}}
	noSecret := func(t *testing.T, what string, b []byte) {
		t.Helper()
		if bytes.Contains(b, []byte(secretValue)) || bytes.Contains(b, []byte(secretValue[:12])) && !bytes.Contains(b, []byte("[redacted:KEY]")) {
			t.Errorf("%s holds the secret: %q", what, b)
		}
	}
	noSecretResp := func(t *testing.T, resp *Response) {
		t.Helper()
		noSecret(t, "body", resp.Body)
		noSecret(t, "headers", []byte(fmt.Sprint(resp.Header)))
		noSecret(t, "status", []byte(resp.Status))
		noSecret(t, "URL", []byte(resp.URL))
	}

	t.Run("header and query, echoed split", func(t *testing.T) {
		resp, err := c.Fetch(context.Background(), scope(), Request{URL: api + "/split?key={{secret:KEY}}", Header: auth})
		if err != nil {
			t.Fatal(err)
		}
		noSecretResp(t, resp)
		want := "start Bearer [redacted:KEY] middle [redacted:KEY] end"
		if string(resp.Body) != want || resp.Header.Get("X-Echo") != "Bearer [redacted:KEY]" {
			t.Errorf("body %q, X-Echo %q", resp.Body, resp.Header.Get("X-Echo"))
		}
		if !strings.Contains(rec.all(), "Bearer "+secretValue+" key="+secretValue) {
			t.Errorf("the server did not get the value: %q", rec.all())
		}
	})

	t.Run("through HTTPClient", func(t *testing.T) {
		req, _ := http.NewRequest("GET", api+"/split?key={{secret:KEY}}", nil)
		req.Header.Set("Authorization", "Bearer {{secret:KEY}}")
		resp, err := c.HTTPClient(scope()).Do(req)
		if err != nil {
			t.Fatal(err)
		}
		body, _ := io.ReadAll(resp.Body)
		resp.Body.Close()
		noSecret(t, "body", body)
		noSecret(t, "headers", []byte(fmt.Sprint(resp.Header, resp.Trailer)))
		noSecret(t, "request URL", []byte(resp.Request.URL.String()))
		if resp.Trailer.Get("X-Trailer") != "[redacted:KEY]" {
			t.Errorf("trailer %q", resp.Trailer.Get("X-Trailer"))
		}
	})

	t.Run("gzip asked by the function", func(t *testing.T) {
		resp, err := c.Fetch(context.Background(), scope(), Request{URL: api + "/gzip",
			Header: http.Header{"Authorization": {"Bearer {{secret:KEY}}"}, "Accept-Encoding": {"gzip"}}})
		if err != nil {
			t.Fatal(err)
		}
		noSecretResp(t, resp)
		if string(resp.Body) != "zipped Bearer [redacted:KEY]" {
			t.Errorf("body %q", resp.Body)
		}
	})

	t.Run("an encoding the pool cannot read", func(t *testing.T) {
		_, err := c.Fetch(context.Background(), scope(), Request{URL: api + "/br", Header: auth})
		wantErr(t, err, ErrUnreachable, codes.Unavailable, "Content-Encoding br")
	})

	t.Run("later requests of the call are redacted too", func(t *testing.T) {
		s := scope()
		if _, err := c.Fetch(context.Background(), s, Request{URL: api + "/", Header: auth}); err != nil {
			t.Fatal(err)
		}
		// The function now sends the value it does not know... it
		// cannot; but a server that remembers it is redacted anyway.
		resp, err := c.Fetch(context.Background(), s, Request{URL: other + "/split?key=" + secretValue,
			Header: http.Header{"Authorization": {"x"}}})
		if err != nil {
			t.Fatal(err)
		}
		noSecretResp(t, resp)
	})

	t.Run("redirect to a granted host", func(t *testing.T) {
		store.looked = nil
		s := scope()
		resp, err := c.Fetch(context.Background(), s, Request{Method: "POST", URL: api + "/to-granted", Header: auth, Body: []byte("b")})
		if err != nil {
			t.Fatal(err)
		}
		noSecretResp(t, resp)
		if _, err := c.Fetch(context.Background(), s, Request{URL: api + "/", Header: auth}); err != nil {
			t.Fatal(err)
		}
		// Three requests carried it; the call read it once.
		if len(store.looked) != 1 || s.Used() != 3 {
			t.Errorf("looked up %v, used %d", store.looked, s.Used())
		}
	})

	t.Run("redirect to an allowed host the secret is not granted for", func(t *testing.T) {
		before := rec.all()
		// net/http drops Authorization on a redirect to another domain,
		// not other headers: the grant is what stops them.
		_, err := c.Fetch(context.Background(), scope(), Request{URL: api + "/to-ungranted",
			Header: http.Header{"X-Api-Key": {"{{secret:KEY}}"}}})
		wantErr(t, err, ErrSecretNotGranted, codes.PermissionDenied, "may be sent only to http://api.test.example")
		if after := rec.all(); strings.Count(after, "\n") != strings.Count(before, "\n")+1 {
			t.Errorf("the redirect went out:\n%s", after[len(before):])
		}
	})

	t.Run("a redirect that echoes the value is not in the error", func(t *testing.T) {
		_, err := c.Fetch(context.Background(), scope(), Request{URL: api + "/leak-location", Header: auth})
		wantErr(t, err, ErrHostNotAllowed, codes.PermissionDenied)
		noSecret(t, "error", []byte(err.Error()))
		noSecret(t, "status", []byte(serving.GRPCStatus(err).Message()))
	})

	t.Run("not granted for this host", func(t *testing.T) {
		store.looked = nil
		_, err := c.Fetch(context.Background(), scope(), Request{URL: other + "/", Header: auth})
		wantErr(t, err, ErrSecretNotGranted, codes.PermissionDenied, "secret KEY may be sent only to")
		if len(store.looked) != 0 {
			t.Errorf("looked up %v for an ungranted host", store.looked)
		}
	})

	t.Run("Range with a secret", func(t *testing.T) {
		_, err := c.Fetch(context.Background(), scope(), Request{URL: api + "/split",
			Header: http.Header{"Authorization": {"Bearer {{secret:KEY}}"}, "Range": {"bytes=7-9"}}})
		wantErr(t, err, ErrTemplate, codes.InvalidArgument, "Range")
	})

	t.Run("templates in the path are refused, in the body sent literally", func(t *testing.T) {
		_, err := c.Fetch(context.Background(), scope(), Request{URL: api + "/{{secret:KEY}}"})
		wantErr(t, err, ErrTemplate, codes.InvalidArgument, "path")
		s := scope()
		resp, err := c.Fetch(context.Background(), s, Request{Method: "POST", URL: api + "/split", Header: auth,
			Body: []byte("{{secret:KEY}}")})
		if err != nil {
			t.Fatal(err)
		}
		noSecretResp(t, resp)
	})
}
