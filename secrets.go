package taskworker

import (
	"bytes"
	"context"
	"fmt"
	"io"
	"net/http"

	"google.golang.org/grpc/codes"
	"google.golang.org/grpc/status"

	"github.com/hivemind/taskworker/internal/callhost"
)

// Secret returns the value of a secret, for a function during one of its
// calls: the function's owner's secret NAME, which the function must be
// granted (`taskworker secret grant NAME --function F`, or `deploy --secret
// NAME`). The pool reads it for the call (ctx must be the call's) and
// records the read in the audit log; the worker keeps and logs nothing.
//
// Its errors are gRPC statuses that a function may return as they are:
// PermissionDenied for a secret not granted (the message names the command
// that grants it), NotFound for no such secret, FailedPrecondition for a
// call that did not come through the pool.
func Secret(ctx context.Context, name string) ([]byte, error) {
	return callhost.From(ctx).Secret(ctx, name)
}

// maxFetchBody bounds the request body Fetch reads before it hands the
// request to the pool, which applies its own, lower, limit.
const maxFetchBody = 8 << 20

// Fetch sends an outbound HTTP request for a function during one of its
// calls, through the pool: function code has no other way out. The request
// must be allowed by the function's --allow-host rules; the pool refuses
// private and loopback addresses, checks every redirect, and bounds sizes,
// time and the number of requests per call. A header or query value may
// hold {{secret:NAME}}: the pool puts the secret's value there on the way
// out, toward the hosts its grant names, and redacts it from the response,
// so the function uses a key it never sees.
//
// The response's body is read whole (up to the pool's limit); closing it is
// optional. Errors are gRPC statuses, as Secret's: PermissionDenied for a
// refusal (naming the rule), ResourceExhausted for a limit, Unavailable for
// a destination that does not answer.
func Fetch(ctx context.Context, req *http.Request) (*http.Response, error) {
	r := &callhost.Request{Method: req.Method, URL: req.URL.String(), Header: req.Header}
	if req.Body != nil && req.Body != http.NoBody {
		b, err := io.ReadAll(io.LimitReader(req.Body, maxFetchBody+1))
		req.Body.Close()
		if err != nil {
			return nil, fmt.Errorf("reading the request body: %w", err)
		}
		if len(b) > maxFetchBody {
			return nil, status.Errorf(codes.InvalidArgument, "the request body is over %d bytes: send less", maxFetchBody)
		}
		r.Body = b
	}
	resp, err := callhost.From(ctx).Fetch(ctx, r)
	if err != nil {
		return nil, err
	}
	out := &http.Response{
		Status:        resp.Status,
		StatusCode:    resp.StatusCode,
		Proto:         "HTTP/1.1",
		ProtoMajor:    1,
		ProtoMinor:    1,
		Header:        resp.Header,
		Body:          io.NopCloser(bytes.NewReader(resp.Body)),
		ContentLength: int64(len(resp.Body)),
		Request:       req,
	}
	if resp.URL != "" && resp.URL != req.URL.String() {
		// After redirects: the request that got this answer.
		if last, err := http.NewRequestWithContext(ctx, req.Method, resp.URL, nil); err == nil {
			out.Request = last
		}
	}
	return out, nil
}

// Secret is the package's Secret, for a function that has its Worker at
// hand.
func (w *Worker) Secret(ctx context.Context, name string) ([]byte, error) { return Secret(ctx, name) }

// Fetch is the package's Fetch, for a function that has its Worker at
// hand.
func (w *Worker) Fetch(ctx context.Context, req *http.Request) (*http.Response, error) {
	return Fetch(ctx, req)
}
