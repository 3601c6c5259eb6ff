package egress

import (
	"bytes"
	"context"
	"crypto/tls"
	"errors"
	"fmt"
	"io"
	"net"
	"net/http"
	"net/netip"
	"net/url"
	"strconv"
	"sync"
	"syscall"
	"time"

	"github.com/hivemind/taskworker/internal/serving"
)

// Client carries out outbound requests for function code: it resolves names
// itself, checks every address against its Policy, dials exactly the address
// it checked, and checks each request (redirects included) against a Scope.
// One Client serves every function; it is safe for concurrent use.
type Client struct {
	cfg       Config
	policy    *Policy
	resolver  Resolver
	dialer    *net.Dialer
	transport *http.Transport
}

// New returns a Client with cfg's settings, zero fields taken from
// DefaultConfig.
func New(cfg Config) (*Client, error) {
	if err := cfg.Validate(); err != nil {
		return nil, err
	}
	cfg = cfg.withDefaults()
	policy, _ := NewPolicy(cfg.AllowNets)
	c := &Client{cfg: cfg, policy: policy, resolver: cfg.Resolver}
	if c.resolver == nil {
		c.resolver = SystemResolver{}
	}
	c.dialer = &net.Dialer{Timeout: cfg.DialTimeout, Control: c.control}
	c.transport = &http.Transport{
		// Never HTTP_PROXY and its kind: a proxy would do the resolving
		// and the dialing that the checks are about.
		Proxy:       nil,
		DialContext: c.dial,
		TLSClientConfig: &tls.Config{
			RootCAs:    cfg.RootCAs,
			MinVersion: tls.VersionTLS12,
		},
		ForceAttemptHTTP2:      true,
		TLSHandshakeTimeout:    cfg.DialTimeout,
		ResponseHeaderTimeout:  cfg.Timeout,
		MaxResponseHeaderBytes: cfg.MaxHeaderBytes,
		MaxIdleConns:           100,
		MaxIdleConnsPerHost:    8,
		IdleConnTimeout:        90 * time.Second,
	}
	return c, nil
}

// Policy is the address policy c enforces.
func (c *Client) Policy() *Policy { return c.policy }

// Close closes c's idle connections.
func (c *Client) Close() { c.transport.CloseIdleConnections() }

// dial resolves addr's host, checks every address, and connects to the
// first that answers, among those it checked.
func (c *Client) dial(ctx context.Context, network, addr string) (net.Conn, error) {
	host, portStr, err := net.SplitHostPort(addr)
	if err != nil {
		return nil, fmt.Errorf("dial %q: %v: %w", addr, err, ErrInvalidURL)
	}
	port, err := strconv.ParseUint(portStr, 10, 16)
	if err != nil {
		return nil, fmt.Errorf("dial %q: bad port: %w", addr, ErrInvalidURL)
	}
	var addrs []netip.Addr
	if a, err := netip.ParseAddr(host); err == nil {
		addrs = []netip.Addr{a}
	} else {
		rctx, cancel := context.WithTimeout(ctx, c.cfg.DialTimeout)
		addrs, err = c.resolver.LookupNetIP(rctx, "ip", host)
		cancel()
		switch {
		case ctx.Err() != nil:
			return nil, fmt.Errorf("resolving %s: %w", host, ctx.Err())
		case err != nil:
			return nil, fmt.Errorf("resolving %s: %v: %w", host, err, ErrUnreachable)
		case len(addrs) == 0:
			return nil, fmt.Errorf("resolving %s: no addresses: %w", host, ErrUnreachable)
		}
	}
	// Every answer must pass: a name that points into a refused network
	// is refused whole, not filtered (docs/RATIONALE.md).
	for _, a := range addrs {
		if err := c.policy.Check(a); err != nil {
			var ae *AddressError
			if errors.As(err, &ae) && a.String() != host {
				ae.Host = host
			}
			return nil, err
		}
	}
	var lastErr error
	for _, a := range addrs {
		conn, err := c.dialer.DialContext(ctx, network, netip.AddrPortFrom(a.Unmap(), uint16(port)).String())
		if err == nil {
			return conn, nil
		}
		var ae *AddressError
		if errors.As(err, &ae) {
			return nil, err
		}
		lastErr = err
		if ctx.Err() != nil {
			break
		}
	}
	return nil, fmt.Errorf("connecting to %s: %v: %w", host, lastErr, ErrUnreachable)
}

// control is the second guard: it checks the address the socket is about
// to connect to, whatever path led there.
func (c *Client) control(network, address string, _ syscall.RawConn) error {
	ap, err := netip.ParseAddrPort(address)
	if err != nil {
		return fmt.Errorf("connecting to %q: not an address and port: %w", address, ErrAddressRefused)
	}
	return c.policy.Check(ap.Addr())
}

// Scope is the egress rights and budget of one function call: where it may
// go, which secrets it may inject toward where, and how many requests it may
// still make. It remembers the secret values injected during the call, and
// redacts them from every response of the call. It is safe for concurrent
// use by the call's requests.
type Scope struct {
	allow    *Allowlist
	grants   Grants
	secrets  Secrets
	max      int
	budget   chan struct{}
	redactor Redactor
}

// ScopeConfig is what a Scope allows.
type ScopeConfig struct {
	Allow       *Allowlist // the function's --allow-host rules; nil allows nothing
	Grants      Grants     // the function's secret grants, with the hosts each may go to
	Secrets     Secrets    // looks secret values up; nil when Grants is empty
	MaxRequests int        // outbound requests, redirects included; 0 is the Client's MaxRequestsPerCall
}

// NewScope returns the scope of one function call.
func (c *Client) NewScope(sc ScopeConfig) *Scope {
	n := sc.MaxRequests
	if n <= 0 {
		n = c.cfg.MaxRequestsPerCall
	}
	s := &Scope{allow: sc.Allow, grants: sc.Grants, max: n, budget: make(chan struct{}, n)}
	if sc.Secrets == nil {
		s.secrets = SecretsFunc(func(context.Context, string) ([]byte, error) {
			return nil, fmt.Errorf("no secrets are available to this call: %w", ErrSecretNotGranted)
		})
	} else {
		s.secrets = &onceSecrets{from: sc.Secrets, values: map[string][]byte{}}
	}
	return s
}

// onceSecrets looks each secret up once per call: one read (one audit
// record) however many requests and redirects carry it, and one value for
// the whole call even if the secret is rotated meanwhile.
type onceSecrets struct {
	from   Secrets
	mu     sync.Mutex
	values map[string][]byte
}

func (o *onceSecrets) Secret(ctx context.Context, name string) ([]byte, error) {
	o.mu.Lock()
	defer o.mu.Unlock()
	if v, ok := o.values[name]; ok {
		return v, nil
	}
	v, err := o.from.Secret(ctx, name)
	if err != nil {
		return nil, err
	}
	o.values[name] = v
	return v, nil
}

// take spends one request of the budget.
func (s *Scope) take() error {
	select {
	case s.budget <- struct{}{}:
		return nil
	default:
		return fmt.Errorf("the call has made its %d outbound requests (redirects count): %w", s.max, ErrTooManyRequests)
	}
}

// Used is how many outbound requests the call has made.
func (s *Scope) Used() int { return len(s.budget) }

// Redactor redacts the secret values injected so far in the call, for
// anything else the pool hands back to the function.
func (s *Scope) Redactor() *Redactor { return &s.redactor }

// HTTPClient is an *http.Client whose every request, redirects included, is
// checked against s and c's policy, has its templates injected, and comes
// back with its body read (at most MaxResponseBytes) and redacted. It is for
// callers that speak net/http (a host function that hands a plugin's request
// on); Fetch is the same for a request held in memory.
func (c *Client) HTTPClient(s *Scope) *http.Client {
	return &http.Client{
		Transport: &guard{c: c, s: s},
		Timeout:   c.cfg.Timeout,
		CheckRedirect: func(req *http.Request, via []*http.Request) error {
			if len(via) > c.cfg.MaxRedirects {
				return fmt.Errorf("more than %d redirects from %s: %w", c.cfg.MaxRedirects, via[0].URL.Redacted(), ErrTooManyRedirects)
			}
			// The previous URL may carry an injected query value.
			req.Header.Del("Referer")
			return nil
		},
	}
}

// guard is the RoundTripper of HTTPClient: every request and every
// redirect passes through it.
type guard struct {
	c *Client
	s *Scope
}

func (g *guard) RoundTrip(req *http.Request) (*http.Response, error) {
	resp, err := g.roundTrip(req)
	if err != nil {
		return nil, g.s.redactor.Error(err)
	}
	return resp, nil
}

func (g *guard) roundTrip(req *http.Request) (*http.Response, error) {
	if req.Body != nil {
		defer req.Body.Close()
	}
	u := *req.URL
	t, err := g.s.allow.matchURL(&u)
	if err != nil {
		return nil, err
	}
	size := len(u.String())
	for k, vs := range req.Header {
		for _, v := range vs {
			size += len(k) + len(v) + 4
		}
	}
	if int64(size) > g.c.cfg.MaxHeaderBytes {
		return nil, fmt.Errorf("the request's URL and headers to %s are over %d bytes: send less: %w", t, g.c.cfg.MaxHeaderBytes, ErrRequestTooLarge)
	}
	var body []byte
	if req.Body != nil && req.Body != http.NoBody {
		body, err = io.ReadAll(io.LimitReader(req.Body, g.c.cfg.MaxRequestBytes+1))
		if err != nil {
			return nil, fmt.Errorf("reading the request body: %v: %w", err, ErrInvalidURL)
		}
		if int64(len(body)) > g.c.cfg.MaxRequestBytes {
			return nil, fmt.Errorf("the request body to %s is over %d bytes: send less: %w", t, g.c.cfg.MaxRequestBytes, ErrRequestTooLarge)
		}
	}
	if err := g.s.take(); err != nil {
		return nil, err
	}
	out := req.Clone(req.Context())
	out.URL = &u
	out.Host = "" // the URL's host, always: Host and SNI name what was checked
	out.Header.Del("Host")
	// The transport asks for gzip itself and decodes it, so the body is
	// redacted decoded.
	out.Header.Del("Accept-Encoding")
	out.Body, out.ContentLength, out.GetBody = http.NoBody, 0, nil
	if len(body) > 0 {
		out.Body, out.ContentLength = io.NopCloser(bytes.NewReader(body)), int64(len(body))
	}
	out, values, err := Inject(req.Context(), out, t, req.Response == nil, g.s.grants, g.s.secrets)
	if err != nil {
		return nil, err
	}
	for n, v := range values {
		g.s.redactor.Add(n, v)
	}
	if len(values) > 0 && (out.Header.Get("Range") != "" || out.Header.Get("If-Range") != "") {
		return nil, fmt.Errorf("a request that carries a secret may not ask for a Range: a part of an echoed secret would not be redacted: %w", ErrTemplate)
	}
	resp, err := g.c.transport.RoundTrip(out)
	if err != nil {
		return nil, classify(req.Context(), t, err)
	}
	defer resp.Body.Close()
	if ce := resp.Header.Get("Content-Encoding"); ce != "" && ce != "identity" && !g.s.redactor.empty() {
		return nil, fmt.Errorf("%s answered with Content-Encoding %s, which the pool cannot check for secrets: %w", t, ce, ErrUnreachable)
	}
	max := g.c.cfg.MaxResponseBytes
	data, err := io.ReadAll(io.LimitReader(resp.Body, max+1))
	if err != nil {
		return nil, classify(req.Context(), t, fmt.Errorf("reading the response: %w", err))
	}
	if int64(len(data)) > max {
		return nil, fmt.Errorf("the response from %s is over %d bytes: %w", t, max, ErrResponseTooLarge)
	}
	g.s.redactor.Response(resp, data)
	resp.Request = req
	return resp, nil
}

// classify gives a transport's error a kind, keeping the kind it has.
func classify(ctx context.Context, t Target, err error) error {
	switch {
	case serving.KindOf(err) != serving.KindUnknown:
		return err
	case errors.Is(ctx.Err(), context.DeadlineExceeded):
		return fmt.Errorf("%s: %v: %w", t, err, ErrTimeout)
	case ctx.Err() != nil:
		return fmt.Errorf("%s: %w", t, ctx.Err())
	}
	var ne net.Error
	if errors.As(err, &ne) && ne.Timeout() {
		return fmt.Errorf("%s: %v: %w", t, err, ErrTimeout)
	}
	return fmt.Errorf("%s: %v: %w", t, err, ErrUnreachable)
}

// Request is an outbound request as function code hands it to the pool.
type Request struct {
	Method string // "" is GET
	URL    string
	Header http.Header
	Body   []byte
}

// Response is what comes back to the function: after redirects, read whole,
// redacted.
type Response struct {
	StatusCode int
	Status     string
	Header     http.Header
	Body       []byte
	URL        string // the last URL, after redirects
}

// Fetch carries out r under s: see HTTPClient for the checks. Its errors
// wrap this package's sentinels (serving.GRPCStatus maps them) and never hold a secret
// value.
func (c *Client) Fetch(ctx context.Context, s *Scope, r Request) (*Response, error) {
	method := r.Method
	if method == "" {
		method = http.MethodGet
	}
	if int64(len(r.Body)) > c.cfg.MaxRequestBytes {
		return nil, fmt.Errorf("the request body is %d bytes, over the limit of %d: send less: %w", len(r.Body), c.cfg.MaxRequestBytes, ErrRequestTooLarge)
	}
	req, err := http.NewRequestWithContext(ctx, method, r.URL, bytes.NewReader(r.Body))
	if err != nil {
		return nil, fmt.Errorf("%q: %v: %w", cut(r.URL), err, ErrInvalidURL)
	}
	if len(r.Body) == 0 {
		req.Body, req.GetBody, req.ContentLength = http.NoBody, nil, 0
	}
	for k, vs := range r.Header {
		for _, v := range vs {
			req.Header.Add(k, v)
		}
	}
	resp, err := c.HTTPClient(s).Do(req)
	if err != nil {
		var ue *url.Error
		if errors.As(err, &ue) {
			err = ue.Err
			if !errors.Is(err, ErrTimeout) && (serving.KindOf(err) == serving.KindTimeout || serving.KindOf(err) == serving.KindUnknown && ue.Timeout()) {
				err = fmt.Errorf("no complete answer within the time limit (%s, or the call's deadline): %v: %w", c.cfg.Timeout, err, ErrTimeout)
			}
		}
		if serving.KindOf(err) == serving.KindUnknown {
			err = fmt.Errorf("%v: %w", err, ErrUnreachable)
		}
		return nil, fmt.Errorf("%s %s: %w", method, cut(req.URL.Redacted()), s.redactor.Error(err))
	}
	defer resp.Body.Close()
	body, err := io.ReadAll(resp.Body) // already read and capped by the guard
	if err != nil {
		return nil, err
	}
	return &Response{
		StatusCode: resp.StatusCode,
		Status:     resp.Status,
		Header:     resp.Header,
		Body:       body,
		URL:        s.redactor.String(resp.Request.URL.String()),
	}, nil
}
