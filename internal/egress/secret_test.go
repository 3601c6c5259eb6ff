package egress

import (
	"context"
	"errors"
	"fmt"
	"net/http"
	"net/url"
	"strings"
	"testing"

	"google.golang.org/grpc/codes"

	"github.com/hivemind/taskworker/internal/serving"
)

// secretStore is a Secrets over a map that records what was looked up.
type secretStore struct {
	values map[string]string
	looked []string
}

func (s *secretStore) Secret(_ context.Context, name string) ([]byte, error) {
	s.looked = append(s.looked, name)
	v, ok := s.values[name]
	if !ok {
		return nil, fmt.Errorf("no secret %s", name)
	}
	return []byte(v), nil
}

func mustAllow(t testing.TB, rules ...string) *Allowlist {
	t.Helper()
	a, err := ParseAllowlist(rules)
	if err != nil {
		t.Fatal(err)
	}
	return a
}

func TestInject(t *testing.T) {
	grants := Grants{
		"API_KEY": mustAllow(t, "https://api.example.com"),
		"TOKEN":   mustAllow(t, "https://api.example.com", "https://*.other.example"),
		"BAD":     mustAllow(t, "https://api.example.com"),
	}
	values := map[string]string{"API_KEY": "k-123", "TOKEN": "t o&k=en", "BAD": "x\r\nInjected: 1"}
	tests := []struct {
		name    string
		url     string
		header  http.Header
		wantURL string
		wantHdr http.Header
		err     error
		errPart string
		looked  string
	}{
		{name: "header", url: "https://api.example.com/v1",
			header:  http.Header{"Authorization": {"Bearer {{secret:API_KEY}}"}},
			wantURL: "https://api.example.com/v1", wantHdr: http.Header{"Authorization": {"Bearer k-123"}}, looked: "API_KEY"},
		{name: "two in one header", url: "https://api.example.com/",
			header:  http.Header{"X-Auth": {"{{secret:API_KEY}}:{{secret:TOKEN}}"}},
			wantURL: "https://api.example.com/", wantHdr: http.Header{"X-Auth": {"k-123:t o&k=en"}}, looked: "API_KEY,TOKEN"},
		{name: "query escaped", url: "https://api.example.com/q?a=1&key={{secret:TOKEN}}&b=%7B",
			wantURL: "https://api.example.com/q?a=1&key=t+o%26k%3Den&b=%7B", looked: "TOKEN"},
		{name: "query percent-encoded template", url: "https://api.example.com/q?key=%7B%7Bsecret:API_KEY%7D%7D",
			wantURL: "https://api.example.com/q?key=k-123", looked: "API_KEY"},
		{name: "wildcard grant", url: "https://a.other.example/",
			header:  http.Header{"X-T": {"{{secret:TOKEN}}"}},
			wantURL: "https://a.other.example/", wantHdr: http.Header{"X-T": {"t o&k=en"}}, looked: "TOKEN"},
		{name: "no templates", url: "https://api.example.com/?x={{notsecret}}",
			header:  http.Header{"X": {"{{ secret:API_KEY }}"}},
			wantURL: "https://api.example.com/?x={{notsecret}}", wantHdr: http.Header{"X": {"{{ secret:API_KEY }}"}}},
		{name: "not granted for host", url: "https://evil.example/",
			header: http.Header{"Authorization": {"{{secret:API_KEY}}"}}, err: ErrSecretNotGranted, errPart: "may be sent only to https://api.example.com"},
		{name: "not granted for scheme", url: "http://api.example.com/",
			header: http.Header{"Authorization": {"{{secret:API_KEY}}"}}, err: ErrSecretNotGranted, errPart: "http://api.example.com:80"},
		{name: "no grant", url: "https://api.example.com/",
			header: http.Header{"Authorization": {"{{secret:OTHER}}"}}, err: ErrSecretNotGranted, errPart: "secret grant OTHER"},
		{name: "one of two not granted", url: "https://a.other.example/?t={{secret:TOKEN}}",
			header: http.Header{"K": {"{{secret:API_KEY}}"}}, err: ErrSecretNotGranted, errPart: "API_KEY"},
		{name: "in path", url: "https://api.example.com/{{secret:API_KEY}}/x", err: ErrTemplate, errPart: "path"},
		{name: "in escaped path", url: "https://api.example.com/%7B%7Bsecret:API_KEY%7D%7D", err: ErrTemplate, errPart: "path"},
		{name: "in query key", url: "https://api.example.com/?{{secret:API_KEY}}=1", err: ErrTemplate, errPart: "query key"},
		{name: "in escaped query key", url: "https://api.example.com/?%7B%7Bsecret:API_KEY%7D%7D=1", err: ErrTemplate, errPart: "query key"},
		{name: "badly escaped query key", url: "https://api.example.com/?%zz=a{{secret:API_KEY}}", err: ErrTemplate, errPart: "not escaped correctly"},
		{name: "in header name", url: "https://api.example.com/",
			header: http.Header{"{{secret:API_KEY}}": {"1"}}, err: ErrTemplate, errPart: "header name"},
		{name: "unclosed", url: "https://api.example.com/",
			header: http.Header{"A": {"{{secret:API_KEY"}}, err: ErrTemplate, errPart: "not closed"},
		{name: "bad name", url: "https://api.example.com/",
			header: http.Header{"A": {"{{secret:a b}}"}}, err: ErrTemplate, errPart: "secret name"},
		{name: "empty name", url: "https://api.example.com/",
			header: http.Header{"A": {"{{secret:}}"}}, err: ErrTemplate, errPart: "secret name"},
		{name: "value with CRLF into a header", url: "https://api.example.com/",
			header: http.Header{"A": {"{{secret:BAD}}"}}, err: ErrTemplate, errPart: "control character", looked: "BAD"},
		{name: "value with CRLF into a query", url: "https://api.example.com/?a={{secret:BAD}}",
			wantURL: "https://api.example.com/?a=x%0D%0AInjected%3A+1", looked: "BAD"},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			store := &secretStore{values: values}
			u, target, err := ParseURL(tt.url)
			if err != nil {
				t.Fatal(err)
			}
			req := &http.Request{Method: "GET", URL: u, Header: tt.header}
			if req.Header == nil {
				req.Header = http.Header{}
			}
			before := req.URL.String()
			out, used, err := Inject(context.Background(), req, target, true, grants, store)
			if got := strings.Join(store.looked, ","); got != tt.looked {
				t.Errorf("looked up %q, want %q", got, tt.looked)
			}
			if tt.err != nil {
				if !errors.Is(err, tt.err) || !strings.Contains(err.Error(), tt.errPart) {
					t.Fatalf("err = %v, want %v saying %q", err, tt.err, tt.errPart)
				}
				for _, v := range values {
					if strings.Contains(err.Error(), v) {
						t.Errorf("error %q holds a secret value", err)
					}
				}
				return
			}
			if err != nil {
				t.Fatal(err)
			}
			if out.URL.String() != tt.wantURL {
				t.Errorf("url = %s, want %s", out.URL, tt.wantURL)
			}
			for k, vs := range tt.wantHdr {
				if got := out.Header[k]; strings.Join(got, "|") != strings.Join(vs, "|") {
					t.Errorf("header %s = %q, want %q", k, got, vs)
				}
			}
			for n := range used {
				if !strings.Contains(tt.looked, n) {
					t.Errorf("used %s, not looked up", n)
				}
			}
			if req.URL.String() != before || strings.Contains(fmt.Sprint(req.Header), "k-123") {
				t.Errorf("Inject changed the caller's request")
			}
		})
	}
}

// After a redirect, a query value's template came from the server, not the
// function: it is refused, never filled in.
func TestInjectRedirectQuery(t *testing.T) {
	u, target, _ := ParseURL("https://api.example.com/?k={{secret:K}}")
	store := &secretStore{values: map[string]string{"K": "v"}}
	_, _, err := Inject(context.Background(), &http.Request{URL: u, Header: http.Header{}}, target, false,
		Grants{"K": mustAllow(t, "https://api.example.com")}, store)
	if !errors.Is(err, ErrTemplate) || len(store.looked) != 0 {
		t.Fatalf("err = %v, looked up %v", err, store.looked)
	}
	if serving.GRPCCode(err) != codes.InvalidArgument {
		t.Errorf("code = %v", serving.GRPCCode(err))
	}
}

func TestRedactor(t *testing.T) {
	var r Redactor
	r.Add("K", []byte("sekret"))
	r.Add("LONG", []byte("sekret-and-more"))
	r.Add("EMPTY", nil)
	r.Add("DUP", []byte("sekret"))
	tests := []struct{ in, want string }{
		{"", ""},
		{"nothing here", "nothing here"},
		{"a sekret b", "a [redacted:K] b"},
		{"sekretsekret", "[redacted:K][redacted:K]"},
		{"x sekret-and-more y", "x [redacted:LONG] y"},
		{"sekre t", "sekre t"},
	}
	for _, tt := range tests {
		if got := string(r.Bytes([]byte(tt.in))); got != tt.want {
			t.Errorf("Bytes(%q) = %q, want %q", tt.in, got, tt.want)
		}
		if got := r.String(tt.in); got != tt.want {
			t.Errorf("String(%q) = %q, want %q", tt.in, got, tt.want)
		}
	}
	h := r.Header(http.Header{"X-Echo": {"Bearer sekret"}, "Sekret": {"1"}, "X-Sekret-sekret": {"ok"}})
	if h.Get("X-Echo") != "Bearer [redacted:K]" || strings.Contains(strings.ToLower(fmt.Sprint(h)), "sekret") {
		t.Errorf("Header = %v", h)
	}
	err := r.Error(fmt.Errorf("wrapped: %w", &url.Error{Op: "Get", URL: "https://x/?k=sekret", Err: ErrTimeout}))
	if strings.Contains(err.Error(), "sekret") || serving.GRPCCode(err) != codes.DeadlineExceeded {
		t.Errorf("Error = %v (%v)", err, serving.GRPCCode(err))
	}
	if plain := errors.New("plain"); r.Error(plain) != plain {
		t.Error("Error changed an error without a secret")
	}
}

// A value inside its own mark ("red" in "[redacted:K]") ends.
func TestRedactorValueInMark(t *testing.T) {
	var r Redactor
	r.Add("K", []byte("red"))
	h := r.Header(http.Header{"X-Red-Red": {"red"}})
	for k, vs := range h {
		if k != "X-[redacted:K]-[redacted:K]" || vs[0] != "[redacted:K]" {
			t.Errorf("Header = %v", h)
		}
	}
}
