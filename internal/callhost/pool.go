package callhost

import (
	"context"
	"fmt"
	"net/http"

	"google.golang.org/grpc"
	"google.golang.org/grpc/status"

	v1 "github.com/hivemind/taskworker/api/taskworker/v1"
)

// Pool is a call's Host on a worker: it asks the pool, over the worker's
// connection (mTLS, its certificate), for the call's secrets and outbound
// requests, naming the call by the token the pool gave it
// (FunctionCallRequest.call_token).
type Pool struct {
	Conn  grpc.ClientConnInterface
	Token string
}

var _ Host = Pool{}

// Secret implements Host with SecretService.ReadForCall.
func (p Pool) Secret(ctx context.Context, name string) ([]byte, error) {
	resp, err := v1.NewSecretServiceClient(p.Conn).ReadForCall(ctx, &v1.ReadForCallRequest{CallToken: p.Token, Name: name})
	if err != nil {
		return nil, fromPool(fmt.Sprintf("reading secret %s", name), err)
	}
	return resp.GetValue(), nil
}

// Fetch implements Host with EgressService.FetchForCall.
func (p Pool) Fetch(ctx context.Context, req *Request) (*Response, error) {
	r := &v1.FetchRequest{Method: req.Method, Url: req.URL, Body: req.Body}
	for k, vs := range req.Header {
		for _, v := range vs {
			r.Headers = append(r.Headers, &v1.HTTPHeader{Name: k, Value: v})
		}
	}
	resp, err := v1.NewEgressServiceClient(p.Conn).FetchForCall(ctx, &v1.FetchForCallRequest{CallToken: p.Token, Request: r})
	if err != nil {
		return nil, fromPool("fetching through the pool", err)
	}
	out := &Response{StatusCode: int(resp.GetStatusCode()), Status: resp.GetStatus(), Body: resp.GetBody(), URL: resp.GetUrl(), Header: http.Header{}}
	for _, h := range resp.GetHeaders() {
		out.Header.Add(h.GetName(), h.GetValue())
	}
	return out, nil
}

// fromPool is the pool's answer as the function gets it: its code, and its
// message after what was being done. The pool's messages never hold a
// secret's value.
func fromPool(doing string, err error) error {
	st := status.Convert(err)
	return status.Errorf(st.Code(), "%s: %s", doing, st.Message())
}
