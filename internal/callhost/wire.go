package callhost

import (
	"context"
	"encoding/json"
	"fmt"
	"net/http"
	"strings"

	"google.golang.org/grpc/codes"
	"google.golang.org/grpc/status"
)

// The limits of what sandboxed code asks of its Host in one call, checked
// where the code runs and again by the worker (a child process is not
// trusted to have checked). The pool applies its own on top.
const (
	// MaxCallsPerCall bounds the secret reads and fetches of one call.
	MaxCallsPerCall = 64
	// MaxRequestJSON bounds a guest's request description (method, URL,
	// headers) as JSON.
	MaxRequestJSON = 64 << 10
	// MaxRequestBody bounds a request body a guest sends.
	MaxRequestBody = 1 << 20
	// MaxResponseBody bounds a response body handed back to a guest; the
	// pool's own limit (8 MiB by default) applies first.
	MaxResponseBody = 8 << 20
	// MaxSecretName bounds a secret's name as a guest gives it (the pool
	// checks the name's form).
	MaxSecretName = 256
)

// Op is one thing sandboxed code asks of its Host, as it crosses the pipe
// from a child process to the worker: exactly one of Secret and Fetch.
type Op struct {
	Secret string       `json:"secret,omitempty"`
	Fetch  *WireRequest `json:"fetch,omitempty"`
}

// WireRequest is an outbound request as guests describe it (docs/ABI.md,
// http_fetch): one value per header name.
type WireRequest struct {
	Method  string            `json:"method,omitempty"`
	URL     string            `json:"url"`
	Headers map[string]string `json:"headers,omitempty"`
	Body    []byte            `json:"body,omitempty"`
}

// Reply is the Host's answer to an Op: Value (a secret's), Response (a
// fetch's) or Error.
type Reply struct {
	Value    []byte        `json:"value,omitempty"`
	Response *WireResponse `json:"response,omitempty"`
	Error    *Wire         `json:"error,omitempty"`
}

// WireResponse is a fetch's answer as guests see it.
type WireResponse struct {
	Status  int               `json:"status"`
	Headers map[string]string `json:"headers"`
	URL     string            `json:"url,omitempty"`
	Body    []byte            `json:"body,omitempty"`
}

// ParseRequest reads a guest's request description, the JSON
// {"method": "GET", "url": "https://...", "headers": {"name": "value"}}
// of taskworker.http_fetch and Extism's http_request, with its body. It
// checks what the host must before passing it on: sizes, and that the
// method and header names are HTTP tokens and values hold no line breaks;
// the URL and the policy are the pool's to judge.
func ParseRequest(desc, body []byte) (*WireRequest, error) {
	if len(desc) > MaxRequestJSON {
		return nil, status.Errorf(codes.InvalidArgument, "the request description is %d bytes, over the limit of %d: send fewer or shorter headers", len(desc), MaxRequestJSON)
	}
	if len(body) > MaxRequestBody {
		return nil, status.Errorf(codes.InvalidArgument, "the request body is %d bytes, over the limit of %d: send less", len(body), MaxRequestBody)
	}
	var r WireRequest
	if err := json.Unmarshal(desc, &r); err != nil {
		return nil, status.Errorf(codes.InvalidArgument, `the request is not JSON of the form {"method": "GET", "url": "https://...", "headers": {"name": "value"}}: %v`, err)
	}
	if err := r.check(); err != nil {
		return nil, err
	}
	if len(body) > 0 {
		r.Body = body
	}
	return &r, nil
}

// check checks r's form, as ParseRequest describes.
func (r *WireRequest) check() error {
	if r.URL == "" {
		return status.Error(codes.InvalidArgument, "the request has no url")
	}
	if r.Method == "" {
		r.Method = http.MethodGet
	}
	r.Method = strings.ToUpper(r.Method)
	if !isToken(r.Method) {
		return status.Errorf(codes.InvalidArgument, "the request's method %q is not an HTTP method", cut(r.Method))
	}
	for k, v := range r.Headers {
		if !isToken(k) {
			return status.Errorf(codes.InvalidArgument, "the header name %q is not an HTTP token", cut(k))
		}
		if strings.ContainsAny(v, "\r\n\x00") {
			return status.Errorf(codes.InvalidArgument, "the value of header %s holds a line break or a NUL", k)
		}
	}
	if len(r.Body) > MaxRequestBody {
		return status.Errorf(codes.InvalidArgument, "the request body is %d bytes, over the limit of %d: send less", len(r.Body), MaxRequestBody)
	}
	return nil
}

// isToken reports whether s is an HTTP token (RFC 9110, 5.6.2).
func isToken(s string) bool {
	if s == "" {
		return false
	}
	for i := 0; i < len(s); i++ {
		c := s[i]
		if c >= 'a' && c <= 'z' || c >= 'A' && c <= 'Z' || c >= '0' && c <= '9' || strings.IndexByte("!#$%&'*+-.^_`|~", c) >= 0 {
			continue
		}
		return false
	}
	return true
}

func cut(s string) string {
	if len(s) > 64 {
		return s[:64] + "..."
	}
	return s
}

// Budget counts one call's Ops against MaxCallsPerCall. The zero value is
// a fresh call's.
type Budget struct{ used int }

// Serve carries out op with h for the call b counts, and returns the
// answer to send back; a failure is in the Reply, for the guest.
func Serve(ctx context.Context, h Host, b *Budget, op Op) Reply {
	if b.used >= MaxCallsPerCall {
		return Reply{Error: WireOf(status.Errorf(codes.ResourceExhausted, "the call has made its %d secret reads and fetches: make fewer per call", MaxCallsPerCall))}
	}
	b.used++
	switch {
	case op.Fetch != nil && op.Secret == "":
		if err := op.Fetch.check(); err != nil {
			return Reply{Error: WireOf(err)}
		}
		req := &Request{Method: op.Fetch.Method, URL: op.Fetch.URL, Header: http.Header{}, Body: op.Fetch.Body}
		for k, v := range op.Fetch.Headers {
			req.Header.Set(k, v)
		}
		resp, err := h.Fetch(ctx, req)
		if err != nil {
			return Reply{Error: WireOf(err)}
		}
		if len(resp.Body) > MaxResponseBody {
			return Reply{Error: WireOf(status.Errorf(codes.ResourceExhausted, "the response body is %d bytes, over the limit of %d a function receives", len(resp.Body), MaxResponseBody))}
		}
		return Reply{Response: &WireResponse{Status: resp.StatusCode, Headers: HeaderMap(resp.Header), URL: resp.URL, Body: resp.Body}}
	case op.Secret != "" && op.Fetch == nil:
		if len(op.Secret) > MaxSecretName {
			return Reply{Error: WireOf(status.Errorf(codes.InvalidArgument, "a secret's name is at most %d bytes", MaxSecretName))}
		}
		v, err := h.Secret(ctx, op.Secret)
		if err != nil {
			return Reply{Error: WireOf(err)}
		}
		return Reply{Value: v}
	}
	return Reply{Error: WireOf(status.Error(codes.InvalidArgument, "a host request names a secret or a fetch, exactly one"))}
}

// Remote is a Host on the far side of a pipe: Ask sends an Op and returns
// the Reply (an error for a broken pipe).
type Remote func(ctx context.Context, op Op) (Reply, error)

var _ Host = Remote(nil)

// Secret implements Host.
func (r Remote) Secret(ctx context.Context, name string) ([]byte, error) {
	reply, err := r(ctx, Op{Secret: name})
	switch {
	case err != nil:
		return nil, status.Errorf(codes.Unavailable, "the worker did not answer: %v", err)
	case reply.Error != nil:
		return nil, reply.Error.Err()
	}
	return reply.Value, nil
}

// Fetch implements Host.
func (r Remote) Fetch(ctx context.Context, req *Request) (*Response, error) {
	w := &WireRequest{Method: req.Method, URL: req.URL, Headers: HeaderMap(req.Header), Body: req.Body}
	reply, err := r(ctx, Op{Fetch: w})
	switch {
	case err != nil:
		return nil, status.Errorf(codes.Unavailable, "the worker did not answer: %v", err)
	case reply.Error != nil:
		return nil, reply.Error.Err()
	case reply.Response == nil:
		return nil, status.Error(codes.Internal, "the worker answered a fetch with no response")
	}
	resp := &Response{StatusCode: reply.Response.Status, URL: reply.Response.URL, Body: reply.Response.Body, Header: http.Header{}}
	resp.Status = fmt.Sprintf("%d %s", resp.StatusCode, http.StatusText(resp.StatusCode))
	for k, v := range reply.Response.Headers {
		resp.Header.Set(k, v)
	}
	return resp, nil
}

// GuestMessage is err as guests read it (taskworker.last_error, a Starlark
// error): the gRPC code's name in snake case, then the message
// ("permission_denied: function f, secret KEY: not granted; ...").
func GuestMessage(err error) string {
	st := Status(err)
	return codeName(st.Code()) + ": " + st.Message()
}

// codeName is c in snake case: PermissionDenied is permission_denied.
func codeName(c codes.Code) string {
	var b strings.Builder
	for i, r := range c.String() {
		if r >= 'A' && r <= 'Z' {
			if i > 0 {
				b.WriteByte('_')
			}
			r += 'a' - 'A'
		}
		b.WriteRune(r)
	}
	return b.String()
}
