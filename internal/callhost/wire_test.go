package callhost

import (
	"context"
	"encoding/json"
	"net/http"
	"strings"
	"testing"

	"google.golang.org/grpc/codes"
	"google.golang.org/grpc/status"
)

func TestParseRequest(t *testing.T) {
	tests := []struct {
		name       string
		desc, body string
		code       codes.Code
		want       WireRequest
	}{
		{"a GET", `{"url": "https://api.example.com/x"}`, "", codes.OK, WireRequest{Method: "GET", URL: "https://api.example.com/x"}},
		{"a post with headers and a body", `{"method": "post", "url": "https://a.example", "headers": {"X-Key": "{{secret:K}}"}}`, "hi", codes.OK,
			WireRequest{Method: "POST", URL: "https://a.example", Headers: map[string]string{"X-Key": "{{secret:K}}"}, Body: []byte("hi")}},
		{"not JSON", `{url:`, "", codes.InvalidArgument, WireRequest{}},
		{"no url", `{"method": "GET"}`, "", codes.InvalidArgument, WireRequest{}},
		{"a method that is not a token", `{"method": "GET /x HTTP/1.1\r\nHost: evil", "url": "https://a.example"}`, "", codes.InvalidArgument, WireRequest{}},
		{"a header name that is not a token", `{"url": "https://a.example", "headers": {"X: y\r\nZ": "v"}}`, "", codes.InvalidArgument, WireRequest{}},
		{"a header value with a line break", `{"url": "https://a.example", "headers": {"X": "v\r\nHost: evil"}}`, "", codes.InvalidArgument, WireRequest{}},
		{"a body over the limit", `{"url": "https://a.example"}`, strings.Repeat("x", MaxRequestBody+1), codes.InvalidArgument, WireRequest{}},
		{"a description over the limit", `{"url": "https://a.example", "method": "` + strings.Repeat("G", MaxRequestJSON) + `"}`, "", codes.InvalidArgument, WireRequest{}},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			got, err := ParseRequest([]byte(tt.desc), []byte(tt.body))
			if status.Code(err) != tt.code {
				t.Fatalf("%v, want %s", err, tt.code)
			}
			if err != nil {
				return
			}
			a, _ := json.Marshal(got)
			b, _ := json.Marshal(tt.want)
			if string(a) != string(b) {
				t.Errorf("got %s, want %s", a, b)
			}
		})
	}
}

// countingHost answers every request, and counts them.
type countingHost struct{ n int }

func (h *countingHost) Secret(context.Context, string) ([]byte, error) {
	h.n++
	return []byte("v"), nil
}
func (h *countingHost) Fetch(context.Context, *Request) (*Response, error) {
	h.n++
	return &Response{StatusCode: 200, Header: http.Header{"A": {"1", "2"}}}, nil
}

// Serve stops at the call's budget, and the Host never sees what Serve
// refuses.
func TestServeBudgetAndChecks(t *testing.T) {
	h := &countingHost{}
	var b Budget
	ctx := context.Background()
	if r := Serve(ctx, h, &b, Op{Fetch: &WireRequest{URL: "https://a.example", Method: "BAD METHOD"}}); r.Error == nil || r.Error.Code != codes.InvalidArgument {
		t.Fatalf("a bad method: %+v", r)
	}
	if r := Serve(ctx, h, &b, Op{Secret: "A", Fetch: &WireRequest{URL: "x"}}); r.Error == nil {
		t.Fatalf("two things at once: %+v", r)
	}
	if r := Serve(ctx, h, &b, Op{Fetch: &WireRequest{URL: "https://a.example"}}); r.Error != nil || r.Response.Headers["A"] != "1, 2" {
		t.Fatalf("a fetch: %+v", r)
	}
	for b.used < MaxCallsPerCall {
		Serve(ctx, h, &b, Op{Secret: "A"})
	}
	r := Serve(ctx, h, &b, Op{Secret: "A"})
	if r.Error == nil || r.Error.Code != codes.ResourceExhausted {
		t.Fatalf("past the budget: %+v", r)
	}
	if h.n != MaxCallsPerCall-2 {
		t.Errorf("the host served %d requests, want %d (the budget less the two refused)", h.n, MaxCallsPerCall-2)
	}
}

func TestGuestMessage(t *testing.T) {
	err := status.Error(codes.PermissionDenied, "not granted")
	if got := GuestMessage(err); got != "permission_denied: not granted" {
		t.Errorf("got %q", got)
	}
}

// FuzzParseRequest holds ParseRequest to what it promises for any guest
// input: no panic, and what it accepts has a token method, token header
// names, values without line breaks, and bounded sizes.
//
//	go test -run='^$' -fuzz=FuzzParseRequest -fuzztime=30s ./internal/callhost
func FuzzParseRequest(f *testing.F) {
	f.Add([]byte(`{"url": "https://a.example", "headers": {"A": "b"}}`), []byte("body"))
	f.Add([]byte(`{"method": "post", "url": "x"}`), []byte(nil))
	f.Add([]byte(`{"method": "G\u0000T", "url": "x", "headers": {"A\nB": "c\r\n"}}`), []byte(nil))
	f.Fuzz(func(t *testing.T, desc, body []byte) {
		r, err := ParseRequest(desc, body)
		if err != nil {
			if status.Code(err) != codes.InvalidArgument {
				t.Fatalf("a refusal with code %s: %v", status.Code(err), err)
			}
			return
		}
		if !isToken(r.Method) || r.URL == "" || len(r.Body) > MaxRequestBody {
			t.Fatalf("accepted %+v", r)
		}
		for k, v := range r.Headers {
			if !isToken(k) || strings.ContainsAny(v, "\r\n\x00") {
				t.Fatalf("accepted header %q: %q", k, v)
			}
		}
	})
}
