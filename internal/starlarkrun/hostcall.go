package starlarkrun

import (
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"sort"
	"strings"

	"go.starlark.net/starlark"
	"go.starlark.net/starlarkstruct"

	"github.com/hivemind/taskworker/internal/callhost"
)

// The builtins that reach outside for a call: secret(name), and the http
// module (http.get, http.post, ...). The child sends each up the pipe as a
// host call; the parent carries it out with the call's Host
// (callhost.From), which asks the pool, and answers. docs/ABI.md,
// "Starlark", has what scripts see.

// hostSecret is the parent's side of secret(name): the value, as JSON
// bytes (base64).
func hostSecret(ctx context.Context, _ *Pool, st *hostCallState, args json.RawMessage) (json.RawMessage, error) {
	var name string
	if err := json.Unmarshal(args, &name); err != nil {
		return nil, errors.New("secret takes the secret's name")
	}
	reply := callhost.Serve(ctx, callhost.From(ctx), &st.budget, callhost.Op{Secret: name})
	if reply.Error != nil {
		return nil, errors.New(callhost.GuestMessage(reply.Error.Err()))
	}
	return json.Marshal(reply.Value)
}

// hostFetch is the parent's side of the http module: args is a
// callhost.WireRequest, the answer a callhost.WireResponse.
func hostFetch(ctx context.Context, _ *Pool, st *hostCallState, args json.RawMessage) (json.RawMessage, error) {
	var req callhost.WireRequest
	if err := json.Unmarshal(args, &req); err != nil {
		return nil, fmt.Errorf("bad request: %v", err)
	}
	reply := callhost.Serve(ctx, callhost.From(ctx), &st.budget, callhost.Op{Fetch: &req})
	if reply.Error != nil {
		return nil, errors.New(callhost.GuestMessage(reply.Error.Err()))
	}
	return json.Marshal(reply.Response)
}

// secretBuiltin is secret(name): the value of a secret the function is
// granted, as a string (of bytes).
func (s *server) secretBuiltin(_ *starlark.Thread, b *starlark.Builtin, args starlark.Tuple, kwargs []starlark.Tuple) (starlark.Value, error) {
	var name string
	if err := starlark.UnpackPositionalArgs(b.Name(), args, kwargs, 1, &name); err != nil {
		return nil, err
	}
	if len(name) > callhost.MaxSecretName {
		return nil, fmt.Errorf("secret: a name is at most %d bytes", callhost.MaxSecretName)
	}
	arg, err := json.Marshal(name)
	if err != nil {
		return nil, err
	}
	result, err := s.hostCall("secret", arg)
	if err != nil {
		return nil, err
	}
	var value []byte
	if err := json.Unmarshal(result, &value); err != nil {
		return nil, fmt.Errorf("secret: bad answer from the host: %v", err)
	}
	return starlark.String(value), nil
}

// httpModule is the http module of a child: http.request(method, url,
// headers={}, body="") and one function per common method.
func (s *server) httpModule() *starlarkstruct.Module {
	members := starlark.StringDict{"request": starlark.NewBuiltin("http.request", s.httpRequest(""))}
	for _, m := range []string{"GET", "HEAD", "POST", "PUT", "PATCH", "DELETE"} {
		name := strings.ToLower(m)
		members[name] = starlark.NewBuiltin("http."+name, s.httpRequest(m))
	}
	return &starlarkstruct.Module{Name: "http", Members: members}
}

// httpRequest is the builtin of one method ("" for http.request, which
// takes the method first): it returns a struct of status, headers (a dict,
// one value per name), body (a string of bytes) and url (after
// redirects).
func (s *server) httpRequest(method string) func(*starlark.Thread, *starlark.Builtin, starlark.Tuple, []starlark.Tuple) (starlark.Value, error) {
	return func(_ *starlark.Thread, b *starlark.Builtin, args starlark.Tuple, kwargs []starlark.Tuple) (starlark.Value, error) {
		req := callhost.WireRequest{Method: method}
		var headers *starlark.Dict
		var body string
		var err error
		if method == "" {
			err = starlark.UnpackArgs(b.Name(), args, kwargs, "method", &req.Method, "url", &req.URL, "headers?", &headers, "body?", &body)
		} else {
			err = starlark.UnpackArgs(b.Name(), args, kwargs, "url", &req.URL, "headers?", &headers, "body?", &body)
		}
		if err != nil {
			return nil, err
		}
		if len(body) > callhost.MaxRequestBody {
			return nil, fmt.Errorf("%s: the body is %d bytes, over the limit of %d", b.Name(), len(body), callhost.MaxRequestBody)
		}
		if body != "" {
			req.Body = []byte(body)
		}
		if headers != nil {
			req.Headers = map[string]string{}
			for _, item := range headers.Items() {
				k, ok1 := starlark.AsString(item[0])
				v, ok2 := starlark.AsString(item[1])
				if !ok1 || !ok2 {
					return nil, fmt.Errorf("%s: headers must map strings to strings", b.Name())
				}
				req.Headers[k] = v
			}
		}
		arg, err := json.Marshal(req)
		if err != nil {
			return nil, err
		}
		result, err := s.hostCall("fetch", arg)
		if err != nil {
			return nil, fmt.Errorf("%s: %w", b.Name(), err)
		}
		var resp callhost.WireResponse
		if err := json.Unmarshal(result, &resp); err != nil {
			return nil, fmt.Errorf("%s: bad answer from the host: %v", b.Name(), err)
		}
		h := starlark.NewDict(len(resp.Headers))
		keys := make([]string, 0, len(resp.Headers))
		for k := range resp.Headers {
			keys = append(keys, k)
		}
		sort.Strings(keys)
		for _, k := range keys {
			_ = h.SetKey(starlark.String(strings.ToLower(k)), starlark.String(resp.Headers[k]))
		}
		return starlarkstruct.FromStringDict(starlark.String("response"), starlark.StringDict{
			"status":  starlark.MakeInt(resp.Status),
			"headers": h,
			"body":    starlark.String(resp.Body),
			"url":     starlark.String(resp.URL),
		}), nil
	}
}
