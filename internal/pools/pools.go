package pools

import (
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"net"
	"strconv"
	"strings"
	"sync"
	"time"

	"google.golang.org/grpc"
	"google.golang.org/grpc/backoff"
	"google.golang.org/grpc/codes"
	"google.golang.org/grpc/credentials"
	"google.golang.org/grpc/resolver"
	"google.golang.org/grpc/status"

	"github.com/hivemind/taskworker/internal/rawio"
)

// Scheme is the gRPC target scheme of a list of several pools.
const Scheme = "taskworker-pools"

// Parse splits a comma-separated list of pool addresses, each host:port,
// and checks each. Spaces around an entry are allowed; an empty entry, a
// missing or bad port and a repeated address are errors that name the
// entry.
func Parse(list string) ([]string, error) {
	if strings.TrimSpace(list) == "" {
		return nil, errors.New("no pool address: give host:port, or several separated by commas")
	}
	var addrs []string
	seen := map[string]bool{}
	for i, a := range strings.Split(list, ",") {
		a = strings.TrimSpace(a)
		if a == "" {
			return nil, fmt.Errorf("pool address list %q: entry %d is empty; separate host:port addresses by single commas", list, i+1)
		}
		host, port, err := net.SplitHostPort(a)
		if err != nil {
			return nil, fmt.Errorf("pool address %q is not host:port (like 127.0.0.1:50051, or [::1]:50051)", a)
		}
		if host == "" {
			return nil, fmt.Errorf("pool address %q has no host; give the pool's name or IP address, like 127.0.0.1%s", a, a)
		}
		if n, err := strconv.Atoi(port); err != nil || n < 1 || n > 65535 {
			return nil, fmt.Errorf("pool address %q: port %q is not a number from 1 to 65535", a, port)
		}
		if seen[a] {
			return nil, fmt.Errorf("pool address list %q names %s twice", list, a)
		}
		seen[a] = true
		addrs = append(addrs, a)
	}
	return addrs, nil
}

// Target is the gRPC target for addrs (from Parse): the address itself
// when there is one, else the list under Scheme, which Resolver resolves.
func Target(addrs []string) string {
	if len(addrs) == 1 {
		return addrs[0]
	}
	return Scheme + ":///" + strings.Join(addrs, ",")
}

// DialOptions are the options that make Target work and spread calls: the
// static resolver and, for several pools, round_robin and the retry policy
// of ReadOnly. A pool that cannot be connected is tried again after at most
// Reconnect (gRPC's default waits up to two minutes), so that a restarted
// replica takes calls again within seconds.
func DialOptions(addrs []string) []grpc.DialOption {
	opts := []grpc.DialOption{grpc.WithContextDialer(rawio.Dial), grpc.WithConnectParams(grpc.ConnectParams{
		Backoff: backoff.Config{BaseDelay: 200 * time.Millisecond, Multiplier: 1.6, Jitter: 0.2, MaxDelay: Reconnect},
		// A connection attempt may take this long before it counts as failed.
		MinConnectTimeout: 5 * time.Second,
	})}
	if len(addrs) == 1 {
		return append(opts, grpc.WithDefaultServiceConfig(serviceConfig(false)))
	}
	return append(opts, grpc.WithResolvers(staticBuilder{}), grpc.WithDefaultServiceConfig(serviceConfig(true)))
}

// Reconnect is the longest a client waits before it tries a pool again.
const Reconnect = 2 * time.Second

// ReadOnly are the methods that change nothing, which a client may send
// again when a pool answers Unavailable: in gRPC's service config naming,
// service to methods. A method not here (CallFunction, Push, Revise,
// Upload, ...) is retried only when no pool began it.
var ReadOnly = map[string][]string{
	"taskworker.v1.FileService":   {"Get", "Synchronous", "Download", "List", "Stat", "FileHistory"},
	"taskworker.v1.AdminService":  {"ListWorkers", "ListFunctions", "WhoAmI", "Status", "ListTokens"},
	"taskworker.v1.DeployService": {"History"},
	"taskworker.v1.QuotaService":  {"GetQuota", "ListQuotas"},
	"taskworker.v1.SecretService": {"List", "Audit"},
	"taskworker.v1.TaskService":   {"GetTask", "ListTasks", "ListSchedules"},
	"taskworker.v1.DNSService":    {"ResolveDomain"},
}

// serviceConfig is gRPC's service config for a client of pools.
func serviceConfig(roundRobin bool) string {
	type name struct {
		Service string `json:"service"`
		Method  string `json:"method"`
	}
	var names []name
	for svc, methods := range ReadOnly {
		for _, m := range methods {
			names = append(names, name{svc, m})
		}
	}
	sc := map[string]any{
		"methodConfig": []any{map[string]any{
			"name": names,
			"retryPolicy": map[string]any{
				"maxAttempts":          4,
				"initialBackoff":       "0.1s",
				"maxBackoff":           "1s",
				"backoffMultiplier":    2,
				"retryableStatusCodes": []string{"UNAVAILABLE"},
			},
		}},
	}
	if roundRobin {
		sc["loadBalancingConfig"] = []any{map[string]any{"round_robin": map[string]any{}}}
	}
	b, err := json.Marshal(sc)
	if err != nil {
		panic(err) // a constant shape
	}
	return string(b)
}

// staticBuilder resolves a Target of several pools to their addresses, each
// with its own name for the TLS check (see PerHost).
type staticBuilder struct{}

func (staticBuilder) Scheme() string { return Scheme }

func (staticBuilder) Build(t resolver.Target, cc resolver.ClientConn, _ resolver.BuildOptions) (resolver.Resolver, error) {
	addrs, err := Parse(t.Endpoint())
	if err != nil {
		return nil, err
	}
	var state resolver.State
	for _, a := range addrs {
		state.Addresses = append(state.Addresses, resolver.Address{Addr: a, ServerName: a})
	}
	if err := cc.UpdateState(state); err != nil {
		return nil, err
	}
	return staticResolver{}, nil
}

type staticResolver struct{}

func (staticResolver) ResolveNow(resolver.ResolveNowOptions) {}
func (staticResolver) Close()                                {}

// PerHost returns transport credentials that check each pool by its own
// name: forHost makes the credentials for one host (the host of the
// address being dialled), once per host.
func PerHost(forHost func(host string) credentials.TransportCredentials) credentials.TransportCredentials {
	return &perHost{forHost: forHost, byHost: map[string]credentials.TransportCredentials{}}
}

type perHost struct {
	forHost func(string) credentials.TransportCredentials
	mu      sync.Mutex
	byHost  map[string]credentials.TransportCredentials
}

func (p *perHost) creds(authority string) credentials.TransportCredentials {
	host := authority
	if h, _, err := net.SplitHostPort(authority); err == nil {
		host = h
	}
	p.mu.Lock()
	defer p.mu.Unlock()
	c := p.byHost[host]
	if c == nil {
		c = p.forHost(host)
		p.byHost[host] = c
	}
	return c
}

func (p *perHost) ClientHandshake(ctx context.Context, authority string, conn net.Conn) (net.Conn, credentials.AuthInfo, error) {
	return p.creds(authority).ClientHandshake(ctx, authority, conn)
}

func (p *perHost) ServerHandshake(net.Conn) (net.Conn, credentials.AuthInfo, error) {
	return nil, nil, errors.New("pools: client credentials cannot serve")
}

func (p *perHost) Info() credentials.ProtocolInfo { return p.creds("").Info() }

func (p *perHost) Clone() credentials.TransportCredentials { return PerHost(p.forHost) }

// OverrideServerName is deprecated in gRPC and unused: each address names
// its own server.
func (p *perHost) OverrideServerName(string) error { return nil }

// neverSentMarks are in the messages of gRPC's Unavailable errors for a
// call that found no pool to send it to: none could be connected (dialling
// or the TLS handshake failed) or the address resolved to none.
var neverSentMarks = []string{"Error while dialing", "error reading server preface", "authentication handshake failed", "name resolver error", "produced zero addresses"}

// NeverSent reports whether err is gRPC's failure to reach any pool, so
// that the call was not sent and no pool carried it out.
func NeverSent(err error) bool {
	st, ok := status.FromError(err)
	if !ok || st.Code() != codes.Unavailable {
		return false
	}
	for _, m := range neverSentMarks {
		if strings.Contains(st.Message(), m) {
			return true
		}
	}
	return false
}
