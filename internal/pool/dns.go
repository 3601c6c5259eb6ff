package pool

import (
	"context"
	"fmt"
	"net"
	"net/netip"
	"strings"

	v1 "github.com/hivemind/taskworker/api/taskworker/v1"
	"github.com/hivemind/taskworker/internal/dnsproxy"
	"github.com/hivemind/taskworker/internal/egress"
)

// dnsService is DNSService.ResolveDomain: the pool resolves for its users
// under the egress policy (package dnsproxy), and answers the network's
// own zone from its registry.
type dnsService struct {
	v1.UnimplementedDNSServiceServer
	r *dnsproxy.Resolver
}

func (s dnsService) ResolveDomain(ctx context.Context, req *v1.DNSRequest) (*v1.DNSResponse, error) {
	user, err := checkUser(ctx, req.GetUserId())
	if err != nil {
		return nil, err
	}
	return s.r.Handle(ctx, user, req)
}

// newResolver builds the pool's resolver: answers filtered by the same
// address policy as outbound requests, the zone answered by dir.
func newResolver(cfg Config, dir dnsproxy.Directory) (*dnsproxy.Resolver, error) {
	policy, err := egress.NewPolicy(cfg.EgressAllowNets)
	if err != nil {
		return nil, fmt.Errorf("pool: egress allowed networks: %w", err)
	}
	return dnsproxy.New(cfg.DNS, policy.Check, nil, dir)
}

// poolDirectory answers the zone: a function is served at this pool's
// address while some live worker can run it, since clients reach functions
// through a pool, never a worker directly. The zone is open to anyone who
// can send it a question, so it names native functions and, as
// <name>.<owner>, public deployed ones only: a private function, even one
// granted to some users, is not in it.
type poolDirectory struct {
	reg     *registry
	deploys *deployments
	addr    func() netip.AddrPort
}

func (d poolDirectory) Serving(function string) []netip.AddrPort {
	served := len(d.reg.routes(function)) > 0
	// Both names and users may hold dots: try every split of
	// <name>.<owner>.
	for i := strings.IndexByte(function, '.'); !served && i >= 0; {
		if dep := d.deploys.get(function[i+1:], function[:i]); dep != nil && dep.Public {
			served = len(d.reg.runtimeRoutes(dep.Runtime)) > 0
		}
		j := strings.IndexByte(function[i+1:], '.')
		if j < 0 {
			break
		}
		i += 1 + j
	}
	if a := d.addr(); served && a.IsValid() {
		return []netip.AddrPort{a}
	}
	return nil
}

// listenAddrPort is the address a listener's clients reach it at: its
// own, or loopback where it listens on every interface (see the Caveats
// in package doc).
func listenAddrPort(lis net.Listener) netip.AddrPort {
	if lis == nil {
		return netip.AddrPort{}
	}
	ap, err := netip.ParseAddrPort(lis.Addr().String())
	if err != nil {
		return netip.AddrPort{}
	}
	if a := ap.Addr().Unmap(); a.IsUnspecified() {
		lo := netip.MustParseAddr("127.0.0.1")
		if a.Is6() {
			lo = netip.IPv6Loopback()
		}
		return netip.AddrPortFrom(lo, ap.Port())
	}
	return netip.AddrPortFrom(ap.Addr().Unmap(), ap.Port())
}

// startDNS registers DNSService on the pool's gRPC server and, when
// Config.DNSListen is set, serves standard DNS there until ctx ends.
func (s *Server) startDNS(ctx context.Context) error {
	res, err := newResolver(s.cfg, poolDirectory{reg: s.reg, deploys: s.deploys, addr: func() netip.AddrPort { return listenAddrPort(s.lis) }})
	if err != nil {
		return err
	}
	v1.RegisterDNSServiceServer(s.grpc, dnsService{r: res})
	if s.cfg.DNSListen == "" {
		return nil
	}
	l, err := res.Serve(ctx, s.cfg.DNSListen)
	if err != nil {
		return fmt.Errorf("pool: DNS listener on %s: %w", s.cfg.DNSListen, err)
	}
	s.dnsAddr = l.Addr()
	s.log.Info("DNS listening", "address", l.Addr().String(), "zone", res.Zone())
	s.goRun(func() {
		<-ctx.Done()
		_ = l.Close()
	})
	return nil
}

// DNSAddr is the standard DNS listener's address, if Config.DNSListen set
// one.
func (s *Server) DNSAddr() netip.AddrPort { return s.dnsAddr }
