package dnsproxy

import (
	"context"
	"errors"
	"fmt"
	"net"
	"net/netip"
	"slices"
	"sync"
	"time"

	"github.com/miekg/dns"
)

// Listener is a standard DNS server (UDP and TCP on one port) answering from
// a Resolver. It answers the network's zone to anyone, names outside it
// only to the sources in Config.Recursive, and refuses everything else.
type Listener struct {
	r       *Resolver
	addr    netip.AddrPort
	udp     *dns.Server
	tcp     *dns.Server
	limiter *rateLimiter
	ctx     context.Context // ends when the listener stops; bounds the answers in progress
	cancel  context.CancelFunc
	wg      sync.WaitGroup
	errs    chan error
	once    sync.Once
	err     error
}

// Serve listens on addr (host:port; port 0 picks one) over UDP and TCP on
// the same port, and answers until ctx ends or Close is called. The
// listener's address is l.Addr().
func (r *Resolver) Serve(ctx context.Context, addr string) (*Listener, error) {
	pc, ln, err := listenBoth(addr)
	if err != nil {
		return nil, fmt.Errorf("dnsproxy: listen on %s: %w", addr, err)
	}
	l := &Listener{
		r:       r,
		addr:    pc.LocalAddr().(*net.UDPAddr).AddrPort(),
		limiter: newRateLimiter(r.cfg.RatePerSource, r.cfg.RateBurst, r.cfg.RateSources, r.now),
		errs:    make(chan error, 2),
	}
	l.ctx, l.cancel = context.WithCancel(context.WithoutCancel(ctx))
	started := make(chan struct{}, 2)
	notify := func() { started <- struct{}{} }
	l.udp = &dns.Server{PacketConn: pc, Handler: dns.HandlerFunc(l.serveUDP), NotifyStartedFunc: notify}
	l.tcp = &dns.Server{Listener: ln, Handler: dns.HandlerFunc(l.serveTCP), NotifyStartedFunc: notify}
	for _, s := range []*dns.Server{l.udp, l.tcp} {
		l.wg.Go(func() { l.errs <- s.ActivateAndServe() })
	}
	for range 2 {
		select {
		case <-started:
		case err := <-l.errs:
			l.cancel()
			pc.Close()
			ln.Close()
			l.wg.Wait()
			return nil, fmt.Errorf("dnsproxy: serve on %s: %w", addr, err)
		}
	}
	stop := context.AfterFunc(ctx, func() { l.Close() })
	l.wg.Go(func() {
		<-l.ctx.Done()
		stop()
	})
	return l, nil
}

// listenBoth opens UDP and TCP on the same port. With port 0 it retries
// when the port UDP got is taken for TCP.
func listenBoth(addr string) (net.PacketConn, net.Listener, error) {
	host, port, err := net.SplitHostPort(addr)
	if err != nil {
		return nil, nil, err
	}
	var lastErr error
	for range 10 {
		pc, err := net.ListenPacket("udp", addr)
		if err != nil {
			return nil, nil, err
		}
		bound := pc.LocalAddr().(*net.UDPAddr).Port
		ln, err := net.Listen("tcp", net.JoinHostPort(host, fmt.Sprint(bound)))
		if err == nil {
			return pc, ln, nil
		}
		pc.Close()
		lastErr = err
		if port != "0" {
			break
		}
	}
	return nil, nil, lastErr
}

// Addr is the address the listener answers on, over UDP and TCP.
func (l *Listener) Addr() netip.AddrPort { return l.addr }

// Close stops answering and waits for the servers to stop.
func (l *Listener) Close() error {
	l.once.Do(func() {
		l.cancel()
		ctx, cancel := context.WithTimeout(context.Background(), 5*time.Second)
		defer cancel()
		l.err = errors.Join(l.udp.ShutdownContext(ctx), l.tcp.ShutdownContext(ctx))
		l.wg.Wait()
	})
	return l.err
}

func (l *Listener) serveUDP(w dns.ResponseWriter, req *dns.Msg) { l.serve(w, req, true) }
func (l *Listener) serveTCP(w dns.ResponseWriter, req *dns.Msg) { l.serve(w, req, false) }

// serve answers one query. Over UDP, a source over its rate gets no answer
// (answering would still amplify a spoofed flood), and an answer larger
// than the client can take (512 bytes without EDNS0, else what it
// advertises, at most Config.UDPSize) is truncated with the TC bit set, so
// the client asks again over TCP, where its address is proven.
func (l *Listener) serve(w dns.ResponseWriter, req *dns.Msg, udp bool) {
	src := addrOf(w.RemoteAddr())
	if req.Response {
		return // never answer an answer: that is how reflection loops start
	}
	if !l.limiter.allow(src) {
		if udp {
			return
		}
		l.reply(w, refusal(req, dns.RcodeRefused), 0)
		return
	}
	size := dns.MaxMsgSize
	if udp {
		size = dns.MinMsgSize
		if opt := req.IsEdns0(); opt != nil {
			size = min(max(int(opt.UDPSize()), dns.MinMsgSize), l.r.cfg.UDPSize)
		}
	}
	l.reply(w, l.answer(req, src), size)
}

// reply sends m truncated to size (0: as it is).
func (l *Listener) reply(w dns.ResponseWriter, m *dns.Msg, size int) {
	if size > 0 {
		m.Truncate(size)
	}
	_ = w.WriteMsg(m) // a client gone away is its own business
}

// refusal is an empty reply to req with rcode.
func refusal(req *dns.Msg, rcode int) *dns.Msg {
	m := new(dns.Msg)
	m.SetRcode(req, rcode)
	return m
}

func addrOf(a net.Addr) netip.Addr {
	switch a := a.(type) {
	case *net.UDPAddr:
		return a.AddrPort().Addr().Unmap()
	case *net.TCPAddr:
		return a.AddrPort().Addr().Unmap()
	}
	return netip.Addr{}
}

// answer builds the reply to one query from src.
func (l *Listener) answer(req *dns.Msg, src netip.Addr) *dns.Msg {
	if req.Opcode != dns.OpcodeQuery {
		return refusal(req, dns.RcodeNotImplemented)
	}
	if len(req.Question) != 1 {
		return refusal(req, dns.RcodeFormatError)
	}
	opt := req.IsEdns0()
	if opt != nil && opt.Version() != 0 {
		m := refusal(req, dns.RcodeBadVers)
		m.SetEdns0(uint16(l.r.cfg.UDPSize), false)
		return m
	}
	m := l.answerQuestion(req, src)
	if opt != nil {
		m.SetEdns0(uint16(l.r.cfg.UDPSize), false)
	}
	m.Compress = true
	return m
}

func (l *Listener) answerQuestion(req *dns.Msg, src netip.Addr) *dns.Msg {
	q := req.Question[0]
	if q.Qclass != dns.ClassINET {
		return refusal(req, dns.RcodeRefused)
	}
	name, err := Normalize(q.Name)
	if err != nil {
		return refusal(req, dns.RcodeRefused)
	}
	inZone := l.r.InZone(name)
	recursive := slices.ContainsFunc(l.r.cfg.Recursive, func(p netip.Prefix) bool { return p.Contains(src) })
	if !inZone && !recursive {
		return refusal(req, dns.RcodeRefused)
	}
	m := new(dns.Msg)
	m.SetReply(req)
	m.Authoritative = inZone
	m.RecursionAvailable = recursive
	if inZone && (q.Qtype == dns.TypeSOA || q.Qtype == dns.TypeNS) && name == l.r.zone {
		if q.Qtype == dns.TypeSOA {
			m.Answer = append(m.Answer, l.soa())
		} else {
			m.Ns = append(m.Ns, l.soa())
		}
		return m
	}
	if q.Qtype == TypeAddresses || checkType(q.Qtype) != nil {
		if !inZone {
			return refusal(req, dns.RcodeNotImplemented)
		}
		m.Ns = append(m.Ns, l.soa())
		return m
	}

	ctx, cancel := context.WithTimeout(l.ctx, l.r.cfg.UpstreamTimeout*time.Duration(max(1, len(l.r.up.servers)))+time.Second)
	defer cancel()
	ans, err := l.r.Resolve(ctx, "", name, q.Qtype)
	switch {
	case err == nil:
	case errors.Is(err, ErrNotFound):
		m.Rcode = dns.RcodeNameError
		if inZone {
			m.Ns = append(m.Ns, l.soa())
		}
		return m
	case errors.Is(err, ErrNoRecords):
		if inZone {
			m.Ns = append(m.Ns, l.soa())
		}
		return m
	case errors.Is(err, ErrNameRefused), errors.Is(err, ErrAllAddressesRefused), errors.Is(err, ErrInvalidName):
		return refusal(req, dns.RcodeRefused)
	default:
		return refusal(req, dns.RcodeServerFailure)
	}
	owner := name
	for _, target := range ans.Chain {
		m.Answer = append(m.Answer, &dns.CNAME{Hdr: dns.RR_Header{Name: owner, Rrtype: dns.TypeCNAME, Class: dns.ClassINET, Ttl: ttlSeconds(ans.TTL)}, Target: target})
		owner = target
	}
	for _, rec := range ans.Records {
		m.Answer = append(m.Answer, rec.rr(ans.TTL))
		if rec.Type == dns.TypeSRV && inZone {
			if extra, err := l.r.zoneAnswer(rec.Target, TypeAddresses); err == nil {
				for _, a := range extra.Records {
					m.Extra = append(m.Extra, a.rr(extra.TTL))
				}
			}
		}
	}
	return m
}

// soa is the zone's SOA record: its MINIMUM is the negative TTL of the
// zone's NXDOMAIN and NODATA answers.
func (l *Listener) soa() dns.RR {
	z := l.r.zone
	ttl := ttlSeconds(l.r.cfg.ZoneTTL)
	return &dns.SOA{
		Hdr: dns.RR_Header{Name: z, Rrtype: dns.TypeSOA, Class: dns.ClassINET, Ttl: ttl},
		Ns:  "ns." + z, Mbox: "hostmaster." + z,
		Serial: 1, Refresh: 3600, Retry: 600, Expire: 86400, Minttl: ttl,
	}
}

func ttlSeconds(d time.Duration) uint32 { return uint32(max(d/time.Second, 1)) }
