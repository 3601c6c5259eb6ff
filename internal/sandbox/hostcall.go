package sandbox

import (
	"context"
	"encoding/json"
	"fmt"
	"strings"

	"google.golang.org/grpc/codes"
	"google.golang.org/grpc/status"

	"github.com/hivemind/taskworker/internal/callhost"
)

// The host functions that reach outside the sandbox for a call: secrets
// and outbound HTTP, through the call's Host (callhost.From), which asks
// the pool. In a child process, that Host is the worker on the other end
// of the pipe (childServer.ask). docs/ABI.md has the ABI.

// startupHost is the Host of a guest's start-up (instance.start): it runs
// before any call, for none, so it reaches nothing outside.
type startupHost struct{}

var errStartup = status.Error(codes.FailedPrecondition,
	"a function's start-up (its runtime's and global initialization, before any call) can read no secret and reach no host: do that in the call")

func (startupHost) Secret(context.Context, string) ([]byte, error) { return nil, errStartup }
func (startupHost) Fetch(context.Context, *callhost.Request) (*callhost.Response, error) {
	return nil, errStartup
}

// hostCalls is what a call's secret reads and fetches have left behind for
// the guest to read.
type hostCalls struct {
	budget    callhost.Budget
	lastError string // taskworker.last_error's
	body      []byte // taskworker.http_body's: the last http_fetch's body
	// Extism's http_status_code and http_headers: the last http_request's.
	status  int32
	headers map[string]string
}

// ask carries out op for inst's call, and records a failure for
// last_error.
func (inst *instance) ask(ctx context.Context, op callhost.Op) callhost.Reply {
	reply := callhost.Serve(ctx, callhost.From(ctx), &inst.call.host.budget, op)
	inst.call.host.lastError = ""
	if reply.Error != nil {
		inst.call.host.lastError = callhost.GuestMessage(reply.Error.Err())
	}
	return reply
}

// fail records err for last_error.
func (inst *instance) fail(err error) { inst.call.host.lastError = callhost.GuestMessage(err) }

// readGuest reads and frees the block h, of at most max bytes (a larger
// one fails, for last_error).
func (inst *instance) readGuest(ctx context.Context, h uint64, max int, what string) ([]byte, bool) {
	if h == 0 {
		return nil, true
	}
	defer inst.free(ctx, h)
	if n := inst.length(ctx, h); n > uint64(max) {
		inst.fail(status.Errorf(codes.InvalidArgument, "the %s is %d bytes, over the limit of %d", what, n, max))
		return nil, false
	}
	return inst.read(ctx, h), true
}

// hostLastError is taskworker.last_error() -> i64: the message of the last
// failure of a taskworker function in this call, or 0.
func hostLastError(ctx context.Context, inst *instance, stack []uint64) {
	stack[0] = 0
	if msg := inst.call.host.lastError; msg != "" {
		stack[0] = inst.write(ctx, []byte(msg))
	}
}

// hostSecretGet is taskworker.secret_get(name i64) -> i64: the secret's
// value, or 0 (last_error says why).
func hostSecretGet(ctx context.Context, inst *instance, stack []uint64) {
	name, ok := inst.readGuest(ctx, stack[0], callhost.MaxSecretName, "secret's name")
	stack[0] = 0
	if !ok {
		return
	}
	if len(name) == 0 {
		inst.fail(status.Error(codes.InvalidArgument, "secret_get: no name"))
		return
	}
	reply := inst.ask(ctx, callhost.Op{Secret: string(name)})
	if reply.Error == nil {
		stack[0] = inst.write(ctx, reply.Value)
	}
}

// guestRequest reads http_fetch's and http_request's arguments: the
// request's JSON description and its body (0: none).
func (inst *instance) guestRequest(ctx context.Context, desc, body uint64) (*callhost.WireRequest, bool) {
	d, ok := inst.readGuest(ctx, desc, callhost.MaxRequestJSON, "request description")
	if !ok {
		inst.free(ctx, body)
		return nil, false
	}
	b, ok := inst.readGuest(ctx, body, callhost.MaxRequestBody, "request body")
	if !ok {
		return nil, false
	}
	req, err := callhost.ParseRequest(d, b)
	if err != nil {
		inst.fail(err)
		return nil, false
	}
	return req, true
}

// hostHTTPFetch is taskworker.http_fetch(request i64, body i64) -> i64:
// JSON {"status": 200, "headers": {...}, "url": "..."} and the body kept
// for http_body, or 0 (last_error says why).
func hostHTTPFetch(ctx context.Context, inst *instance, stack []uint64) {
	inst.call.host.body = nil
	req, ok := inst.guestRequest(ctx, stack[0], stack[1])
	stack[0] = 0
	if !ok {
		return
	}
	reply := inst.ask(ctx, callhost.Op{Fetch: req})
	if reply.Error != nil {
		return
	}
	resp := *reply.Response
	inst.call.host.body, resp.Body = resp.Body, nil
	b, err := json.Marshal(resp)
	if err != nil {
		panic(err)
	}
	stack[0] = inst.write(ctx, b)
}

// hostHTTPBody is taskworker.http_body() -> i64: the last http_fetch's
// response body, or 0 when it was empty.
func hostHTTPBody(ctx context.Context, inst *instance, stack []uint64) {
	stack[0] = 0
	if b := inst.call.host.body; len(b) > 0 {
		stack[0] = inst.write(ctx, b)
	}
	inst.call.host.body = nil
}

// extismHTTPRequest is Extism's http_request(request i64, body i64) -> i64,
// carried out as http_fetch is, so that a plugin using its PDK's HTTP call
// goes out through the pool under the function's policy. It returns the
// response body (0 when empty); a refusal or a failure traps the call with
// the pool's reason, as Extism's own host does for a host not allowed.
func extismHTTPRequest(inst *instance, ctx context.Context, stack []uint64) {
	h := &inst.call.host
	h.status, h.headers = 0, nil
	req, ok := inst.guestRequest(ctx, stack[0], stack[1])
	if !ok {
		panic("extism http_request: " + h.lastError)
	}
	reply := inst.ask(ctx, callhost.Op{Fetch: req})
	if reply.Error != nil {
		panic("extism http_request: " + h.lastError)
	}
	h.status = int32(reply.Response.Status)
	h.headers = make(map[string]string, len(reply.Response.Headers))
	for k, v := range reply.Response.Headers {
		h.headers[strings.ToLower(k)] = v
	}
	stack[0] = 0
	if len(reply.Response.Body) > 0 {
		stack[0] = inst.write(ctx, reply.Response.Body)
	}
}

// extismHTTPHeaders is Extism's http_headers() -> i64: the last
// http_request's response headers as a JSON object, or 0.
func extismHTTPHeaders(inst *instance, ctx context.Context, stack []uint64) {
	stack[0] = 0
	if h := inst.call.host.headers; h != nil {
		b, err := json.Marshal(h)
		if err != nil {
			panic(fmt.Sprintf("extism http_headers: %v", err))
		}
		stack[0] = inst.write(ctx, b)
	}
}
