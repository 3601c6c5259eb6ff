package dnsproxy

import (
	"context"
	"errors"
	"fmt"
	"net"
	"strconv"
	"strings"
	"time"

	"github.com/miekg/dns"
)

// upstreamAnswer is the part of an upstream's response the resolver uses.
type upstreamAnswer struct {
	rcode     int
	answer    []dns.RR
	authority []dns.RR
}

// upstream asks recursive resolvers, in order, until one answers.
type upstream struct {
	servers []string
	// unusable says why there are no servers (resolv.conf unreadable or
	// empty); nil when servers is not empty.
	unusable error
	timeout  time.Duration
	udp, tcp *dns.Client
}

// ednsSize is the UDP payload size advertised upstream: large enough for
// most answers, small enough not to fragment (the DNS flag day 2020 value).
const ednsSize = 1232

func newUpstream(cfg Config) *upstream {
	u := &upstream{
		servers: cfg.Upstreams,
		timeout: cfg.UpstreamTimeout,
		udp:     &dns.Client{Net: "udp", UDPSize: ednsSize, Timeout: cfg.UpstreamTimeout},
		tcp:     &dns.Client{Net: "tcp", Timeout: cfg.UpstreamTimeout},
	}
	if len(u.servers) > 0 {
		return u
	}
	sys, err := dns.ClientConfigFromFile(cfg.ResolvConf)
	switch {
	case err != nil:
		u.unusable = fmt.Errorf("no upstream configured and the system's resolvers are unknown (%w); configure upstream resolvers as host:port", err)
		return u
	case len(sys.Servers) == 0:
		u.unusable = fmt.Errorf("no upstream configured and %s names no nameserver; configure upstream resolvers as host:port", cfg.ResolvConf)
	}
	for _, s := range sys.Servers {
		u.servers = append(u.servers, net.JoinHostPort(s, sys.Port))
	}
	return u
}

// exchange asks the upstreams for name's records of type qtype. The answer
// is a NOERROR or NXDOMAIN response to this very question; any other
// outcome of a server (no answer in time, SERVFAIL, REFUSED, a response to
// another question) moves on to the next server, and the last one's is
// returned, wrapping ErrUpstream.
func (u *upstream) exchange(ctx context.Context, name string, qtype uint16) (upstreamAnswer, error) {
	if u.unusable != nil {
		return upstreamAnswer{}, fmt.Errorf("%w: %w", ErrUpstream, u.unusable)
	}
	q := new(dns.Msg)
	q.SetQuestion(name, qtype)
	q.RecursionDesired = true
	q.SetEdns0(ednsSize, false)
	var errs []error
	for _, server := range u.servers {
		if err := ctx.Err(); err != nil {
			return upstreamAnswer{}, fmt.Errorf("%w: %w", ErrUpstream, err)
		}
		resp, err := u.ask(ctx, q, server)
		if err != nil {
			errs = append(errs, err)
			continue
		}
		return upstreamAnswer{rcode: resp.Rcode, answer: resp.Answer, authority: resp.Ns}, nil
	}
	return upstreamAnswer{}, fmt.Errorf("%w: %s %s: %w", ErrUpstream, display(name), typeName(qtype), errors.Join(errs...))
}

// ask sends q to one server over UDP, and again over TCP when the answer
// was truncated.
func (u *upstream) ask(ctx context.Context, q *dns.Msg, server string) (*dns.Msg, error) {
	ctx, cancel := context.WithTimeout(ctx, u.timeout)
	defer cancel()
	resp, _, err := u.udp.ExchangeContext(ctx, q, server)
	if err == nil && resp.Truncated {
		resp, _, err = u.tcp.ExchangeContext(ctx, q, server)
	}
	if err != nil {
		return nil, fmt.Errorf("%s: %w", server, err)
	}
	if len(resp.Question) != 1 || !strings.EqualFold(resp.Question[0].Name, q.Question[0].Name) || resp.Question[0].Qtype != q.Question[0].Qtype {
		return nil, fmt.Errorf("%s: answered another question", server)
	}
	if resp.Rcode != dns.RcodeSuccess && resp.Rcode != dns.RcodeNameError {
		rc, ok := dns.RcodeToString[resp.Rcode]
		if !ok {
			rc = "rcode " + strconv.Itoa(resp.Rcode)
		}
		return nil, fmt.Errorf("%s: answered %s", server, rc)
	}
	return resp, nil
}
