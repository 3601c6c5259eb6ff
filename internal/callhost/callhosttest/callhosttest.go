// Package callhosttest serves what a call's Host asks the pool for, for
// the tests of the runtimes that use one: the real SecretService and
// EgressService (ReadForCall, FetchForCall) over real gRPC on TCP, a real
// secrets store on a real embedded etcd, the real egress client, and, in
// place of the pool's calls in flight, a table of call tokens ([Pool.Begin]).
// The worker's identity, which the pool takes from its certificate, is
// the one the test names.
package callhosttest

import (
	"bytes"
	"context"
	"crypto/rand"
	"encoding/hex"
	"log/slog"
	"net"
	"net/netip"
	"path/filepath"
	"sync"
	"testing"
	"time"

	clientv3 "go.etcd.io/etcd/client/v3"
	"google.golang.org/grpc"
	"google.golang.org/grpc/codes"
	"google.golang.org/grpc/credentials/insecure"
	"google.golang.org/grpc/status"

	"github.com/hivemind/taskworker/internal/callhost"
	"github.com/hivemind/taskworker/internal/egress"
	"github.com/hivemind/taskworker/internal/etcdserver"
	"github.com/hivemind/taskworker/internal/keyring"
	"github.com/hivemind/taskworker/internal/secrets"
)

// WorkerID is the worker every call of a Pool runs on.
const WorkerID = "w-test"

// Pool is the pool's side of calls' Hosts, for tests.
type Pool struct {
	Store *secrets.Store
	Conn  *grpc.ClientConn
	logs  *logBuffer

	mu    sync.Mutex
	calls map[string]egress.Call
}

// NewStore returns a secrets store as the pool has one: on a real embedded
// etcd (fast elections, a fresh data directory) with a keyring of its own,
// all gone when the test ends.
func NewStore(t testing.TB) *secrets.Store {
	t.Helper()
	ecfg := etcdserver.DefaultConfig(t.TempDir())
	ecfg.TickMs, ecfg.ElectionMs = 10, 100
	etcd, err := etcdserver.Start(context.Background(), ecfg)
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(etcd.Close)
	cli, err := clientv3.New(clientv3.Config{Endpoints: etcd.Endpoints(), DialTimeout: 5 * time.Second})
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { cli.Close() })
	ring, err := keyring.Open(filepath.Join(t.TempDir(), keyring.FileName))
	if err != nil {
		t.Fatal(err)
	}
	return secrets.New(cli, "/tw/", ring)
}

// Start serves the services until the test ends. Outbound requests may
// reach loopback (where tests' HTTP servers listen), as an operator's
// --egress-allow-net 127.0.0.0/8 would allow. The servers log at debug
// level; Logs returns what they wrote.
func Start(t testing.TB) *Pool {
	t.Helper()
	return StartConfig(t, egress.Config{})
}

// StartConfig is Start with the egress client's cfg (loopback allowed on
// top of its AllowNets).
func StartConfig(t testing.TB, cfg egress.Config) *Pool {
	t.Helper()
	p := &Pool{Store: NewStore(t), logs: &logBuffer{}, calls: map[string]egress.Call{}}
	cfg.AllowNets = append(cfg.AllowNets, netip.MustParsePrefix("127.0.0.0/8"))
	client, err := egress.New(cfg)
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(client.Close)
	log := slog.New(slog.NewTextHandler(p.logs, &slog.HandlerOptions{Level: slog.LevelDebug}))
	noUsers := func(context.Context, string) (string, error) {
		return "", status.Error(codes.PermissionDenied, "only calls' requests here")
	}
	worker := func(context.Context) (string, error) { return WorkerID, nil }
	srv := grpc.NewServer()
	egress.NewServer(client, p.Store, noUsers, log).ServeCalls(p, worker).Register(srv)
	secrets.NewServer(p.Store, noUsers, log).ServeCalls(p, worker).Register(srv)
	lis, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	go srv.Serve(lis)
	t.Cleanup(srv.Stop)
	p.Conn, err = grpc.NewClient(lis.Addr().String(), grpc.WithTransportCredentials(insecure.NewCredentials()))
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { p.Conn.Close() })
	return p
}

// ResolveCall implements egress.CallResolver.
func (p *Pool) ResolveCall(_ context.Context, worker, token string) (egress.Call, error) {
	p.mu.Lock()
	defer p.mu.Unlock()
	c, ok := p.calls[token]
	switch {
	case !ok:
		return egress.Call{}, egress.ErrUnknownCall
	case worker != WorkerID:
		return egress.Call{}, egress.ErrWrongWorker
	}
	return c, nil
}

// Begin starts a call of c's function, as the pool does when it forwards
// one, and returns ctx carrying the call's Host, which the worker would
// put there. The call ends (its token no longer opens anything) with end.
func (p *Pool) Begin(ctx context.Context, c egress.Call) (_ context.Context, end func()) {
	token, end := p.BeginToken(c)
	return callhost.With(ctx, callhost.Pool{Conn: p.Conn, Token: token}), end
}

// BeginToken is Begin for a test that hands the token to a worker, as the
// pool does in FunctionCallRequest.call_token.
func (p *Pool) BeginToken(c egress.Call) (token string, end func()) {
	b := make([]byte, 16)
	rand.Read(b)
	token = hex.EncodeToString(b)
	done := make(chan struct{})
	c.Done = done
	p.mu.Lock()
	p.calls[token] = c
	p.mu.Unlock()
	var once sync.Once
	return token, func() {
		once.Do(func() {
			p.mu.Lock()
			delete(p.calls, token)
			p.mu.Unlock()
			close(done)
		})
	}
}

// Logs returns what the servers logged, at debug level.
func (p *Pool) Logs() []byte { return p.logs.bytes() }

type logBuffer struct {
	mu sync.Mutex
	b  bytes.Buffer
}

func (l *logBuffer) Write(b []byte) (int, error) {
	l.mu.Lock()
	defer l.mu.Unlock()
	return l.b.Write(b)
}

func (l *logBuffer) bytes() []byte {
	l.mu.Lock()
	defer l.mu.Unlock()
	return bytes.Clone(l.b.Bytes())
}
