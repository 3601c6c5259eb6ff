package worker

import (
	"context"
	"fmt"
	"net/http"

	"google.golang.org/grpc/status"

	v1 "github.com/hivemind/taskworker/api/taskworker/v1"
	"github.com/hivemind/taskworker/internal/callhost"
)

// poolHost is a call's Host: it asks the pool, over the worker's mTLS
// connection, for the call's secrets and outbound requests, naming the
// call by the token the pool gave it.
type poolHost struct {
	s     *Server
	token string
}

var _ callhost.Host = poolHost{}

// withCallHost returns ctx carrying req's Host, when the pool gave the call
// a token; without one, function code reaches nothing outside
// (callhost.ErrNoCall).
func (s *Server) withCallHost(ctx context.Context, req *v1.FunctionCallRequest) context.Context {
	if req.GetCallToken() == "" {
		return ctx
	}
	return callhost.With(ctx, poolHost{s: s, token: req.GetCallToken()})
}

// Secret implements callhost.Host.
func (h poolHost) Secret(ctx context.Context, name string) ([]byte, error) {
	conn := h.s.poolConn()
	if conn == nil {
		return nil, callhost.ErrNoCall
	}
	resp, err := v1.NewSecretServiceClient(conn).ReadForCall(ctx, &v1.ReadForCallRequest{CallToken: h.token, Name: name})
	if err != nil {
		return nil, fromPool(fmt.Sprintf("reading secret %s", name), err)
	}
	return resp.GetValue(), nil
}

// Fetch implements callhost.Host.
func (h poolHost) Fetch(ctx context.Context, req *callhost.Request) (*callhost.Response, error) {
	conn := h.s.poolConn()
	if conn == nil {
		return nil, callhost.ErrNoCall
	}
	r := &v1.FetchRequest{Method: req.Method, Url: req.URL, Body: req.Body}
	for k, vs := range req.Header {
		for _, v := range vs {
			r.Headers = append(r.Headers, &v1.HTTPHeader{Name: k, Value: v})
		}
	}
	resp, err := v1.NewEgressServiceClient(conn).FetchForCall(ctx, &v1.FetchForCallRequest{CallToken: h.token, Request: r})
	if err != nil {
		return nil, fromPool("fetching through the pool", err)
	}
	out := &callhost.Response{StatusCode: int(resp.GetStatusCode()), Status: resp.GetStatus(), Body: resp.GetBody(), URL: resp.GetUrl(), Header: http.Header{}}
	for _, hd := range resp.GetHeaders() {
		out.Header.Add(hd.GetName(), hd.GetValue())
	}
	return out, nil
}

// fromPool is the pool's answer as the function gets it: its code, and
// its message after what was being done. The pool's messages never hold
// a secret's value.
func fromPool(doing string, err error) error {
	st := status.Convert(err)
	return status.Errorf(st.Code(), "%s: %s", doing, st.Message())
}
