package taskworker

import (
	"context"
	"crypto/x509"
	"encoding/json"
	"fmt"
	"os"
	"slices"
	"strings"

	"google.golang.org/grpc"
	"google.golang.org/grpc/credentials"
	"google.golang.org/grpc/credentials/insecure"

	v1 "github.com/hivemind/taskworker/api/taskworker/v1"
	"github.com/hivemind/taskworker/internal/auth"
	"github.com/hivemind/taskworker/internal/liveness"
	"github.com/hivemind/taskworker/internal/overload"
	"github.com/hivemind/taskworker/internal/pki"
	"github.com/hivemind/taskworker/internal/pools"
	"github.com/hivemind/taskworker/internal/serving"
)

// Client calls a TaskWorker network through its pool. It is safe for
// concurrent use; make one and share it.
type Client struct {
	conn  *grpc.ClientConn
	rpc   v1.RPCServiceClient
	admin v1.AdminServiceClient
	pools []string
}

// ClientOption configures a Client.
type ClientOption func(*clientConfig)

type clientConfig struct {
	token    string
	ca       []byte
	caName   string
	caErr    error
	insecure bool
	dialOpts []grpc.DialOption
}

// WithCA verifies the pool with the network's CA certificate (PEM), as
// `taskworker up` writes it (TASKWORKER_CA) and a pool keeps it (ca.crt in
// its data directory). Without WithCA or WithCAFile the client trusts the
// system's CAs, which do not know a network's own CA.
func WithCA(certPEM []byte) ClientOption {
	return func(c *clientConfig) { c.ca, c.caName = certPEM, "the CA given to the client" }
}

// WithCAFile is WithCA with the certificate read from a file.
func WithCAFile(path string) ClientOption {
	return func(c *clientConfig) {
		c.ca, c.caErr = os.ReadFile(path)
		c.caName = "the CA in " + path
	}
}

// WithInsecure talks to a pool run with --insecure: plaintext, the token
// readable by anyone on the path. For a trusted host only.
func WithInsecure() ClientOption {
	return func(c *clientConfig) { c.insecure = true }
}

// WithToken authenticates the client with an API token.
func WithToken(token string) ClientOption {
	return func(c *clientConfig) { c.token = token }
}

// WithDialOptions adds gRPC dial options (interceptors, keepalive, ...).
func WithDialOptions(opts ...grpc.DialOption) ClientOption {
	return func(c *clientConfig) { c.dialOpts = append(c.dialOpts, opts...) }
}

// Dial returns a client for the pool at addr, host:port, or for several
// replicas of the pool: "10.0.0.1:50051,10.0.0.2:50051". It connects
// lazily: an unreachable pool shows as an error on the first call. A call
// the network pushes back (ResourceExhausted with a retry delay: it was not
// carried out) is retried with backoff and jitter while the call's deadline
// allows; a connection whose pool stops answering is closed by keepalive.
//
// With several pools, calls are spread over those that answer (gRPC's
// round_robin), and a pool that stops or dies is left out until it answers
// again. A call no pool began (its connection was refused, or the pool was
// stopping and turned it away) is sent to another pool; so are the
// read-only calls (Get, Download, Stat, History, List, Sync, Workers,
// Functions, Resolve, ...) when a pool answers Unavailable. A call that
// changes something (Call, Push, Upload, Revise, Delete, ...) is never sent
// twice by the client: when its pool dies while it runs, it fails with
// Unavailable, and it may or may not have been carried out (see
// NotCarriedOut). A pool stopped gracefully (SIGTERM) finishes the calls
// it began, so a rolling restart fails none. Each pool's certificate is
// checked against the name its address gives.
func Dial(addr string, opts ...ClientOption) (*Client, error) {
	var c clientConfig
	for _, o := range opts {
		o(&c)
	}
	if err := auth.Validate(c.token); err != nil {
		return nil, err
	}
	addrs, err := poolAddrs(addr)
	if err != nil {
		return nil, err
	}
	creds, err := c.credentials()
	if err != nil {
		return nil, err
	}
	dialOpts := append([]grpc.DialOption{
		grpc.WithTransportCredentials(creds),
		grpc.WithPerRPCCredentials(auth.Bearer{Token: c.token, Secure: !c.insecure}),
		grpc.WithDefaultCallOptions(grpc.MaxCallRecvMsgSize(16 << 20)),
		liveness.DialOption(),
		grpc.WithChainUnaryInterceptor(overload.DefaultRetry.UnaryClientInterceptor()),
	}, pools.DialOptions(addrs)...)
	conn, err := grpc.NewClient(pools.Target(addrs), append(dialOpts, c.dialOpts...)...)
	if err != nil {
		return nil, fmt.Errorf("pool address %q: %w", addr, err)
	}
	return &Client{conn: conn, rpc: v1.NewRPCServiceClient(conn), admin: v1.NewAdminServiceClient(conn), pools: addrs}, nil
}

// poolAddrs parses Dial's address: a gRPC target with a scheme
// ("dns:///pool.example:50051") passes as it is; anything else is one
// host:port or a comma-separated list of them.
func poolAddrs(addr string) ([]string, error) {
	if strings.Contains(addr, "://") && !strings.Contains(addr, ",") {
		return []string{addr}, nil
	}
	return pools.Parse(addr)
}

// credentials verify each pool by the CA and by the host its address names
// (pki.ClientConfig: an untrusted pool fails with an error naming the CA
// this client holds and the one it needs).
func (c *clientConfig) credentials() (credentials.TransportCredentials, error) {
	if c.insecure {
		return insecure.NewCredentials(), nil
	}
	if c.caErr != nil {
		return nil, fmt.Errorf("the network's CA certificate: %w", c.caErr)
	}
	var ca *x509.CertPool
	if c.ca != nil {
		ca = x509.NewCertPool()
		if !ca.AppendCertsFromPEM(c.ca) {
			return nil, fmt.Errorf("%s holds no PEM certificate; give the network's ca.crt", c.caName)
		}
	}
	return pools.PerHost(func(host string) credentials.TransportCredentials {
		return credentials.NewTLS(pki.ClientConfig(pki.Verify{CA: ca, CAName: c.caName, Host: host}, nil))
	}), nil
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

// RevokeWorker revokes a worker's certificate (admin tokens only): every
// pool drops the worker at once, its key can never enrol again, and its id
// is free for a new worker. It reports whether the id was enrolled.
func (c *Client) RevokeWorker(ctx context.Context, id string) (bool, error) {
	resp, err := c.admin.RevokeWorker(ctx, &v1.RevokeWorkerRequest{WorkerId: id})
	if err != nil {
		return false, err
	}
	return resp.Revoked, nil
}

// Pools returns the addresses of the pools the client calls, as Dial was
// given them.
func (c *Client) Pools() []string { return slices.Clone(c.pools) }

// Conn returns the client's gRPC connection, for the generated clients of
// package taskworkerv1.
func (c *Client) Conn() *grpc.ClientConn { return c.conn }

// NotCarriedOut reports whether err says for certain that a call was not
// carried out, so that sending it again cannot do it twice: no pool could
// be reached (Unavailable before the call was sent), the network pushed it
// back (ResourceExhausted with a retry delay) for longer than the call's
// deadline, or the pool says the write failed before its commit (a file
// write's error marked not committed, whatever its code). Any other error
// of a call that changes something (Push, Revise, Upload, Call of a
// function that is not idempotent, ...) leaves its outcome unknown: an
// Unavailable from a pool that died while it ran, DeadlineExceeded or
// Canceled may come after the pool stored the file or the function ran.
// Look before doing it again (List, History), or make the operation
// idempotent (Revise with an expected version).
func NotCarriedOut(err error) bool {
	if _, pushedBack := overload.RetryDelay(err); pushedBack {
		return true
	}
	return pools.NeverSent(err) || serving.IsNotCommitted(err)
}
