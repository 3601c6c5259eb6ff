package callhost

import (
	"context"
	"net/http"
	"strings"

	"google.golang.org/grpc/codes"
	"google.golang.org/grpc/status"

	"github.com/hivemind/taskworker/internal/egress"
)

// Host carries out what a call's function code asks of the outside, on the
// function's behalf and under its grants. Its errors are gRPC statuses.
type Host interface {
	// Secret returns the current value of a secret of the function's
	// owner that the function is granted (without hosts). Each read is an
	// audit event.
	Secret(ctx context.Context, name string) ([]byte, error)
	// Fetch carries out one outbound HTTP request through the pool's
	// egress proxy, under the function's --allow-host rules: header and
	// query values may hold {{secret:NAME}}, injected by the pool toward
	// the hosts the grant names, and redacted from the response.
	Fetch(ctx context.Context, req *Request) (*Response, error)
}

// Request is an outbound request as function code hands it over.
type Request = egress.Request

// Response is what comes back: after redirects, read whole, redacted.
type Response = egress.Response

type hostKey struct{}

// With returns ctx carrying the call's Host.
func With(ctx context.Context, h Host) context.Context {
	return context.WithValue(ctx, hostKey{}, h)
}

// From returns the Host of ctx's call; without one, a Host whose every
// method fails with ErrNoCall.
func From(ctx context.Context) Host {
	if h, ok := ctx.Value(hostKey{}).(Host); ok {
		return h
	}
	return noCall{}
}

// ErrNoCall is the error of a call that did not come through the pool with
// a call token: it reaches nothing outside.
var ErrNoCall = status.Error(codes.FailedPrecondition,
	"this call did not come through the pool with a call token, so it can read no secret and reach no host: call the function through the pool (a call made on a worker directly has neither)")

type noCall struct{}

func (noCall) Secret(context.Context, string) ([]byte, error)     { return nil, ErrNoCall }
func (noCall) Fetch(context.Context, *Request) (*Response, error) { return nil, ErrNoCall }

// Status is err as a status: its own, or Unknown with its message.
func Status(err error) *status.Status {
	if st, ok := status.FromError(err); ok {
		return st
	}
	return status.New(codes.Unknown, err.Error())
}

// Wire is a Host's error as it crosses a pipe: the gRPC code and the
// message.
type Wire struct {
	Code    codes.Code `json:"code"`
	Message string     `json:"message"`
}

// WireOf is err as it crosses a pipe.
func WireOf(err error) *Wire {
	st := Status(err)
	return &Wire{Code: st.Code(), Message: st.Message()}
}

// Err is the status w stands for.
func (w *Wire) Err() error { return status.Error(w.Code, w.Message) }

// HeaderMap is a header as guests see it: one value per name, repeated
// values joined with ", " (RFC 9110).
func HeaderMap(h http.Header) map[string]string {
	out := make(map[string]string, len(h))
	for k, vs := range h {
		out[k] = strings.Join(vs, ", ")
	}
	return out
}
