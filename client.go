package taskworker

import (
	"context"
	"encoding/json"
	"fmt"

	"google.golang.org/grpc"
	"google.golang.org/grpc/credentials/insecure"

	v1 "github.com/hivemind/taskworker/api/taskworker/v1"
	"github.com/hivemind/taskworker/internal/auth"
	"github.com/hivemind/taskworker/internal/liveness"
	"github.com/hivemind/taskworker/internal/overload"
)

// Client calls a TaskWorker network through its pool. It is safe for
// concurrent use; make one and share it.
type Client struct {
	conn  *grpc.ClientConn
	rpc   v1.RPCServiceClient
	admin v1.AdminServiceClient
}

// ClientOption configures a Client.
type ClientOption func(*clientConfig)

type clientConfig struct {
	token    string
	dialOpts []grpc.DialOption
}

// WithToken authenticates the client with an API token.
func WithToken(token string) ClientOption {
	return func(c *clientConfig) { c.token = token }
}

// WithDialOptions adds gRPC dial options (interceptors, keepalive, ...).
func WithDialOptions(opts ...grpc.DialOption) ClientOption {
	return func(c *clientConfig) { c.dialOpts = append(c.dialOpts, opts...) }
}

// Dial returns a client for the pool at addr. It connects lazily: an
// unreachable pool shows as an error on the first call. A call the network
// pushes back (ResourceExhausted with a retry delay: it was not carried
// out) is retried with backoff and jitter while the call's deadline allows;
// a connection whose pool stops answering is closed by keepalive.
func Dial(addr string, opts ...ClientOption) (*Client, error) {
	var c clientConfig
	for _, o := range opts {
		o(&c)
	}
	if err := auth.Validate(c.token); err != nil {
		return nil, err
	}
	dialOpts := append([]grpc.DialOption{
		grpc.WithTransportCredentials(insecure.NewCredentials()),
		grpc.WithPerRPCCredentials(auth.Bearer{Token: c.token}),
		grpc.WithDefaultCallOptions(grpc.MaxCallRecvMsgSize(16 << 20)),
		liveness.DialOption(),
		grpc.WithChainUnaryInterceptor(overload.DefaultRetry.UnaryClientInterceptor()),
	}, c.dialOpts...)
	conn, err := grpc.NewClient(addr, dialOpts...)
	if err != nil {
		return nil, fmt.Errorf("pool address %q: %w", addr, err)
	}
	return &Client{conn: conn, rpc: v1.NewRPCServiceClient(conn), admin: v1.NewAdminServiceClient(conn)}, nil
}

// Close releases the client's connection.
func (c *Client) Close() error { return c.conn.Close() }

// Call calls a function with args, each encoded as JSON, and returns its
// JSON result. Errors are gRPC status errors (status.Code tells them apart).
func (c *Client) Call(ctx context.Context, name string, args ...any) (json.RawMessage, error) {
	if args == nil {
		args = []any{}
	}
	b, err := json.Marshal(args)
	if err != nil {
		return nil, fmt.Errorf("encoding the arguments of %s: %w", name, err)
	}
	return c.CallJSON(ctx, name, b)
}

// CallJSON calls a function with its arguments already encoded as a JSON
// array (or object, for a function taking one struct).
func (c *Client) CallJSON(ctx context.Context, name string, args []byte) (json.RawMessage, error) {
	resp, err := c.rpc.CallFunction(ctx, &v1.FunctionCallRequest{FunctionName: name, Args: args})
	if err != nil {
		return nil, err
	}
	return resp.Result, nil
}

// Workers lists the live workers.
func (c *Client) Workers(ctx context.Context) ([]*v1.WorkerInfo, error) {
	resp, err := c.admin.ListWorkers(ctx, &v1.ListWorkersRequest{})
	if err != nil {
		return nil, err
	}
	return resp.Workers, nil
}

// Functions lists the functions the network serves.
func (c *Client) Functions(ctx context.Context) ([]*v1.FunctionInfo, error) {
	resp, err := c.admin.ListFunctions(ctx, &v1.ListFunctionsRequest{})
	if err != nil {
		return nil, err
	}
	return resp.Functions, nil
}

// CreateToken makes an API token for user (admin tokens only).
func (c *Client) CreateToken(ctx context.Context, user, description string) (string, error) {
	resp, err := c.admin.CreateToken(ctx, &v1.CreateTokenRequest{User: user, Role: v1.Role_ROLE_USER, Description: description})
	if err != nil {
		return "", err
	}
	return resp.Token, nil
}

// Conn returns the client's gRPC connection, for the generated clients of
// package taskworkerv1.
func (c *Client) Conn() *grpc.ClientConn { return c.conn }
