package worker

import (
	"context"
	"strings"
	"testing"

	"google.golang.org/grpc/codes"
	"google.golang.org/grpc/status"

	v1 "github.com/hivemind/taskworker/api/taskworker/v1"
	"github.com/hivemind/taskworker/internal/callhost"
	"github.com/hivemind/taskworker/internal/callhost/callhosttest"
	"github.com/hivemind/taskworker/internal/egress"
)

// A call the pool forwarded with a token reaches the call's secrets over
// the worker's connection to the pool; the function's error keeps the
// pool's code; a call without a token reaches nothing.
func TestCallTokenGivesTheCallItsHost(t *testing.T) {
	pool := callhosttest.Start(t)
	ctx := context.Background()
	if _, err := pool.Store.Put(ctx, "alice", "KEY", []byte("worker-key-value")); err != nil {
		t.Fatal(err)
	}
	if _, err := pool.Store.Grant(ctx, "alice", "KEY", "reader", nil); err != nil {
		t.Fatal(err)
	}
	s, err := New(Config{ID: callhosttest.WorkerID})
	if err != nil {
		t.Fatal(err)
	}
	s.pool.Store(pool.Conn) // as registration leaves it; the harness closes it
	read := func(ctx context.Context, name string) (string, error) {
		v, err := callhost.From(ctx).Secret(ctx, name)
		return string(v), err
	}
	for _, name := range []string{"reader", "stranger"} {
		if err := s.Register(name, read, false); err != nil {
			t.Fatal(err)
		}
	}
	tests := []struct {
		name     string
		function string
		token    bool
		code     codes.Code
		want     string
	}{
		{"granted", "reader", true, codes.OK, `"worker-key-value"`},
		{"not granted", "stranger", true, codes.PermissionDenied, "secret grant KEY --function stranger"},
		{"no token", "reader", false, codes.FailedPrecondition, "through the pool"},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			req := &v1.FunctionCallRequest{FunctionName: tt.function, Args: []byte(`["KEY"]`), UserId: "bob"}
			if tt.token {
				token, end := pool.BeginToken(egress.Call{Owner: "alice", Function: tt.function, Caller: "bob"})
				defer end()
				req.CallToken = token
			}
			resp, err := s.call(ctx, req)
			if st := status.Convert(err); st.Code() != tt.code {
				t.Fatalf("%v, want %s", err, tt.code)
			}
			if err == nil && string(resp.GetResult()) != tt.want || err != nil && !strings.Contains(err.Error(), tt.want) {
				t.Fatalf("%s, %v; want %s", resp.GetResult(), err, tt.want)
			}
		})
	}
}
