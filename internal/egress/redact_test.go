package egress

import (
	"bytes"
	"context"
	"crypto/md5"
	"crypto/sha256"
	"encoding/base64"
	"encoding/hex"
	"fmt"
	"io"
	"net/http"
	"sort"
	"strconv"
	"strings"
	"testing"
)

// lengthEcho is a server that echoes the Authorization header it gets in
// its body and headers, and describes the body it sends in every header a
// server may compute from it: its length, a range of it, digests.
func lengthEcho(w http.ResponseWriter, r *http.Request) {
	auth := r.Header.Get("Authorization")
	body := []byte("you sent " + auth + ", thanks")
	sum := sha256.Sum256(body)
	md := md5.Sum(body)
	h := w.Header()
	h.Set("X-Echo", auth)
	h.Set("Content-Length", strconv.Itoa(len(body)))
	h.Set("ETag", `"`+hex.EncodeToString(sum[:])+`"`)
	h.Set("Content-Md5", base64.StdEncoding.EncodeToString(md[:]))
	h.Set("Digest", "sha-256="+base64.StdEncoding.EncodeToString(sum[:]))
	h.Set("Content-Digest", "sha-256=:"+base64.StdEncoding.EncodeToString(sum[:])+":")
	h.Set("Repr-Digest", "sha-256=:"+base64.StdEncoding.EncodeToString(sum[:])+":")
	status := http.StatusOK
	switch r.URL.Path {
	case "/partial":
		// A range the function did not ask for, naming the whole length.
		h.Set("Content-Range", fmt.Sprintf("bytes 0-%d/%d", len(body)-1, len(body)+10))
		status = http.StatusPartialContent
	case "/chunked":
		h.Del("Content-Length")
		w.WriteHeader(status)
		w.Write(body[:5])
		w.(http.Flusher).Flush()
		w.Write(body[5:])
		return
	}
	w.WriteHeader(status)
	if r.Method != http.MethodHead {
		w.Write(body)
	}
}

// TestRedactedResponseRevealsNoLength fetches from a server that echoes the
// injected value, with two values of different lengths: what the function
// gets must hold neither value, and must be the same for both, to the byte,
// so that nothing in it depends on the value's length or content.
func TestRedactedResponseRevealsNoLength(t *testing.T) {
	srv := newServer(t, lengthEcho)
	res := newResolver(map[string][]string{"api.test.example": {"127.0.0.1"}})
	c := newClient(t, Config{Resolver: res, AllowNets: loopback})
	api := "http://api.test.example:" + srv.port
	values := []string{"short", "a-much-longer-secret-value-0123456789abcdef"}

	// seen is what a function can see of a response, Date aside.
	seen := func(status string, h http.Header, body []byte, url string) string {
		var lines []string
		for k, vs := range h {
			if k != "Date" {
				lines = append(lines, k+": "+strings.Join(vs, ", "))
			}
		}
		sort.Strings(lines)
		return fmt.Sprintf("%s\n%s\n%s\n%q", status, strings.Join(lines, "\n"), url, body)
	}
	check := func(t *testing.T, fetch func(value string) (status string, h http.Header, body []byte, url string)) {
		t.Helper()
		var got []string
		for _, v := range values {
			status, h, body, url := fetch(v)
			s := seen(status, h, body, url)
			if strings.Contains(s, v) {
				t.Errorf("the response holds the value %q:\n%s", v, s)
			}
			if cl := h.Get("Content-Length"); cl != "" && cl != strconv.Itoa(len(body)) {
				t.Errorf("Content-Length %s for a body of %d bytes", cl, len(body))
			}
			got = append(got, s)
		}
		if got[0] != got[1] {
			t.Errorf("the responses differ with the value's length:\n--- %d bytes:\n%s\n--- %d bytes:\n%s", len(values[0]), got[0], len(values[1]), got[1])
		}
	}
	scope := func(value string) *Scope {
		return c.NewScope(ScopeConfig{
			Allow:   mustAllow(t, api),
			Grants:  Grants{"KEY": mustAllow(t, api)},
			Secrets: &secretStore{values: map[string]string{"KEY": value}},
		})
	}
	for _, tc := range []struct{ method, path string }{
		{"GET", "/"}, {"GET", "/partial"}, {"GET", "/chunked"}, {"HEAD", "/"},
	} {
		t.Run("Fetch "+tc.method+" "+tc.path, func(t *testing.T) {
			check(t, func(v string) (string, http.Header, []byte, string) {
				resp, err := c.Fetch(context.Background(), scope(v), Request{Method: tc.method, URL: api + tc.path,
					Header: http.Header{"Authorization": {"Bearer {{secret:KEY}}"}}})
				if err != nil {
					t.Fatal(err)
				}
				if tc.method == "GET" && !bytes.Contains(resp.Body, []byte("you sent Bearer [redacted:KEY], thanks")) {
					t.Errorf("body %q", resp.Body)
				}
				return resp.Status, resp.Header, resp.Body, resp.URL
			})
		})
		t.Run("HTTPClient "+tc.method+" "+tc.path, func(t *testing.T) {
			check(t, func(v string) (string, http.Header, []byte, string) {
				req, _ := http.NewRequest(tc.method, api+tc.path, nil)
				req.Header.Set("Authorization", "Bearer {{secret:KEY}}")
				resp, err := c.HTTPClient(scope(v)).Do(req)
				if err != nil {
					t.Fatal(err)
				}
				defer resp.Body.Close()
				body, _ := io.ReadAll(resp.Body)
				if resp.ContentLength != int64(len(body)) {
					t.Errorf("ContentLength %d for a body of %d bytes", resp.ContentLength, len(body))
				}
				h := resp.Header.Clone()
				for k, vs := range resp.Trailer {
					h["Trailer-"+k] = vs
				}
				return resp.Status, h, body, resp.Request.URL.String()
			})
		})
	}

	t.Run("a response that does not echo keeps its headers", func(t *testing.T) {
		plain := newServer(t, func(w http.ResponseWriter, r *http.Request) {
			w.Header().Set("ETag", `"v1"`)
			io.WriteString(w, "nothing of yours")
		})
		u := "http://api.test.example:" + plain.port
		s := c.NewScope(ScopeConfig{Allow: mustAllow(t, u), Grants: Grants{"KEY": mustAllow(t, u)},
			Secrets: &secretStore{values: map[string]string{"KEY": values[1]}}})
		resp, err := c.Fetch(context.Background(), s, Request{URL: u, Header: http.Header{"Authorization": {"Bearer {{secret:KEY}}"}}})
		if err != nil {
			t.Fatal(err)
		}
		if resp.Header.Get("ETag") != `"v1"` || resp.Header.Get("Content-Length") != "16" {
			t.Errorf("headers %v", resp.Header)
		}
	})
}
