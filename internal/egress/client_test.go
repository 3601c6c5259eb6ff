package egress

import (
	"compress/gzip"
	"context"
	"errors"
	"fmt"
	"io"
	"log"
	"net"
	"net/http"
	"net/http/httptest"
	"net/netip"
	"net/url"
	"sort"
	"strings"
	"sync"
	"sync/atomic"
	"testing"
	"time"

	"google.golang.org/grpc/codes"

	"github.com/hivemind/taskworker/internal/serving"
)

// fakeResolver answers from a table; a name with several answers gives them
// in turn, the last one from then on.
type fakeResolver struct {
	mu      sync.Mutex
	answers map[string][][]netip.Addr
	calls   map[string]int
}

func newResolver(names map[string][]string) *fakeResolver {
	r := &fakeResolver{answers: map[string][][]netip.Addr{}, calls: map[string]int{}}
	for name, seq := range names {
		for _, answer := range seq {
			var as []netip.Addr
			for _, s := range strings.Split(answer, ",") {
				as = append(as, netip.MustParseAddr(s))
			}
			r.answers[name] = append(r.answers[name], as)
		}
	}
	return r
}

func (r *fakeResolver) LookupNetIP(_ context.Context, network, host string) ([]netip.Addr, error) {
	r.mu.Lock()
	defer r.mu.Unlock()
	seq, ok := r.answers[host]
	if !ok {
		return nil, &net.DNSError{Err: "no such host", Name: host, IsNotFound: true}
	}
	i := min(r.calls[host], len(seq)-1)
	r.calls[host]++
	return seq[i], nil
}

func (r *fakeResolver) Calls(host string) int {
	r.mu.Lock()
	defer r.mu.Unlock()
	return r.calls[host]
}

// server is a local test server that counts its requests.
type server struct {
	*httptest.Server
	hits atomic.Int64
	port string
}

func newServer(t *testing.T, h http.HandlerFunc) *server {
	t.Helper()
	s := &server{}
	s.Server = httptest.NewServer(http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		s.hits.Add(1)
		h(w, r)
	}))
	t.Cleanup(s.Close)
	_, s.port, _ = net.SplitHostPort(s.Listener.Addr().String())
	return s
}

// echo writes back what it received: host, headers, query, body.
func echo(w http.ResponseWriter, r *http.Request) {
	body, _ := io.ReadAll(r.Body)
	var keys []string
	for k := range r.Header {
		keys = append(keys, k)
	}
	sort.Strings(keys)
	w.Header().Set("X-Echo-Authorization", r.Header.Get("Authorization"))
	fmt.Fprintf(w, "%s %s host=%s\n", r.Method, r.URL.RequestURI(), r.Host)
	for _, k := range keys {
		fmt.Fprintf(w, "%s: %s\n", k, strings.Join(r.Header[k], ", "))
	}
	fmt.Fprintf(w, "body=%s\n", body)
}

var loopback = []netip.Prefix{netip.MustParsePrefix("127.0.0.1/32")}

func newClient(t testing.TB, cfg Config) *Client {
	t.Helper()
	c, err := New(cfg)
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(c.Close)
	return c
}

func wantErr(t *testing.T, err error, sentinel error, code codes.Code, parts ...string) {
	t.Helper()
	if !errors.Is(err, sentinel) {
		t.Fatalf("err = %v, want %v", err, sentinel)
	}
	if serving.GRPCCode(err) != code {
		t.Errorf("code = %v, want %v (err %v)", serving.GRPCCode(err), code, err)
	}
	for _, p := range parts {
		if !strings.Contains(err.Error(), p) {
			t.Errorf("%q does not say %q", err, p)
		}
	}
}

// The allowed path: a public-looking name the resolver maps to the test
// server, with the operator allowing 127.0.0.1 for the test; and the same
// refused without the allowance.
func TestFetchThroughResolver(t *testing.T) {
	srv := newServer(t, echo)
	res := newResolver(map[string][]string{"api.test.example": {"127.0.0.1"}})
	allow := mustAllow(t, "http://api.test.example:"+srv.port)
	url := "http://api.test.example:" + srv.port + "/v1?x=1"

	c := newClient(t, Config{Resolver: res, AllowNets: loopback})
	resp, err := c.Fetch(context.Background(), c.NewScope(ScopeConfig{Allow: allow}), Request{URL: url})
	if err != nil {
		t.Fatal(err)
	}
	if resp.StatusCode != 200 || !strings.Contains(string(resp.Body), "GET /v1?x=1 host=api.test.example:"+srv.port) {
		t.Fatalf("response %d %q", resp.StatusCode, resp.Body)
	}

	c = newClient(t, Config{Resolver: res})
	_, err = c.Fetch(context.Background(), c.NewScope(ScopeConfig{Allow: allow}), Request{URL: url})
	wantErr(t, err, ErrAddressRefused, codes.PermissionDenied,
		"host api.test.example resolves to 127.0.0.1", "loopback", "--egress-allow-net 127.0.0.0/8")
	var ae *AddressError
	if !errors.As(err, &ae) || ae.Host != "api.test.example" {
		t.Errorf("AddressError = %+v", ae)
	}
	if srv.hits.Load() != 1 {
		t.Errorf("server hits = %d, want 1", srv.hits.Load())
	}
}

func TestFetchRefusesAddresses(t *testing.T) {
	srv := newServer(t, echo)
	res := newResolver(map[string][]string{
		"private.test.example":  {"10.1.2.3"},
		"metadata.test.example": {"169.254.169.254"},
		"mapped.test.example":   {"::ffff:127.0.0.1"},
		"nat64.test.example":    {"64:ff9b::7f00:1"},
		"mixed.test.example":    {"93.184.215.14,127.0.0.1"},
		"localhost":             {"127.0.0.1,::1"},
	})
	c := newClient(t, Config{Resolver: res})
	p := srv.port
	tests := []struct {
		url      string
		sentinel error
		code     codes.Code
		parts    []string
	}{
		{"http://127.0.0.1:" + p + "/", ErrAddressRefused, codes.PermissionDenied, []string{"127.0.0.1 is loopback"}},
		{"http://169.254.169.254/latest/meta-data/", ErrAddressRefused, codes.PermissionDenied, []string{"169.254.169.254 is link-local", "--egress-allow-net 169.254.0.0/16"}},
		{"http://[::ffff:127.0.0.1]:" + p + "/", ErrAddressRefused, codes.PermissionDenied, []string{"IPv4-mapped form of 127.0.0.1", "loopback"}},
		{"http://[::1]:" + p + "/", ErrAddressRefused, codes.PermissionDenied, []string{"::1 is loopback"}},
		{"http://[fd00::1]/", ErrAddressRefused, codes.PermissionDenied, []string{"unique-local"}},
		{"http://2130706433:" + p + "/", ErrInvalidURL, codes.InvalidArgument, []string{"IPv4 address 127.0.0.1"}},
		{"http://0x7f.1:" + p + "/", ErrInvalidURL, codes.InvalidArgument, []string{"IPv4 address 127.0.0.1"}},
		{"http://017700000001:" + p + "/", ErrInvalidURL, codes.InvalidArgument, []string{"IPv4 address 127.0.0.1"}},
		{"http://private.test.example/", ErrAddressRefused, codes.PermissionDenied, []string{"resolves to 10.1.2.3", "private"}},
		{"http://metadata.test.example/", ErrAddressRefused, codes.PermissionDenied, []string{"resolves to 169.254.169.254", "link-local"}},
		{"http://mapped.test.example:" + p + "/", ErrAddressRefused, codes.PermissionDenied, []string{"IPv4-mapped form of 127.0.0.1"}},
		{"http://nat64.test.example:" + p + "/", ErrAddressRefused, codes.PermissionDenied, []string{"NAT64 form of 127.0.0.1"}},
		{"http://mixed.test.example:" + p + "/", ErrAddressRefused, codes.PermissionDenied, []string{"resolves to 127.0.0.1"}},
		{"http://localhost:" + p + "/", ErrAddressRefused, codes.PermissionDenied, []string{"loopback"}},
		{"http://unknown.test.example/", ErrUnreachable, codes.Unavailable, []string{"resolving unknown.test.example"}},
	}
	for _, tt := range tests {
		t.Run(tt.url, func(t *testing.T) {
			// Each URL is in the allowlist when it can be, so that the
			// address policy is what refuses it.
			var rules []string
			if u, err := url.Parse(tt.url); err == nil {
				if r, err := ParseRule(u.Scheme + "://" + u.Host); err == nil {
					rules = append(rules, r.String())
				}
			}
			s := c.NewScope(ScopeConfig{Allow: mustAllow(t, rules...)})
			_, err := c.Fetch(context.Background(), s, Request{URL: tt.url})
			wantErr(t, err, tt.sentinel, tt.code, tt.parts...)
		})
	}
	if srv.hits.Load() != 0 {
		t.Errorf("the server was reached %d times", srv.hits.Load())
	}
}

func TestFetchNotAllowlisted(t *testing.T) {
	srv := newServer(t, echo)
	c := newClient(t, Config{AllowNets: loopback})
	for _, rules := range [][]string{nil, {"http://127.0.0.1:1"}, {"https://127.0.0.1:" + srv.port}} {
		s := c.NewScope(ScopeConfig{Allow: mustAllow(t, rules...)})
		_, err := c.Fetch(context.Background(), s, Request{URL: srv.URL})
		wantErr(t, err, ErrHostNotAllowed, codes.PermissionDenied, "--allow-host")
		if s.Used() != 0 {
			t.Errorf("a refused request spent the budget")
		}
	}
	if srv.hits.Load() != 0 {
		t.Errorf("the server was reached")
	}
}

// A name whose answer changes between the check and the dial cannot reach
// the second answer: the client dials what it checked. The first answer,
// 127.0.0.2, is allowed but nothing listens there; the second is the server.
func TestFetchRebinding(t *testing.T) {
	srv := newServer(t, echo)
	res := newResolver(map[string][]string{"rebind.test.example": {"127.0.0.2", "127.0.0.1"}})
	c := newClient(t, Config{Resolver: res, AllowNets: []netip.Prefix{netip.MustParsePrefix("127.0.0.2/32")}})
	allow := mustAllow(t, "http://rebind.test.example:"+srv.port)
	_, err := c.Fetch(context.Background(), c.NewScope(ScopeConfig{Allow: allow}), Request{URL: "http://rebind.test.example:" + srv.port + "/"})
	wantErr(t, err, ErrUnreachable, codes.Unavailable, "127.0.0.2")
	if n := res.Calls("rebind.test.example"); n != 1 {
		t.Errorf("resolved %d times, want once", n)
	}
	// A second request resolves again, and is refused on the new answer.
	_, err = c.Fetch(context.Background(), c.NewScope(ScopeConfig{Allow: allow}), Request{URL: "http://rebind.test.example:" + srv.port + "/"})
	wantErr(t, err, ErrAddressRefused, codes.PermissionDenied, "resolves to 127.0.0.1", "loopback")
	if srv.hits.Load() != 0 {
		t.Errorf("the server was reached")
	}
}

// A new connection resolves and checks again: an answer that turns private
// after a first good request is refused once the idle connection is gone.
func TestFetchChecksEachConnection(t *testing.T) {
	srv := newServer(t, echo)
	res := newResolver(map[string][]string{"turn.test.example": {"127.0.0.1", "10.9.9.9"}})
	c := newClient(t, Config{Resolver: res, AllowNets: loopback})
	s := c.NewScope(ScopeConfig{Allow: mustAllow(t, "http://turn.test.example:"+srv.port)})
	u := "http://turn.test.example:" + srv.port + "/"
	if _, err := c.Fetch(context.Background(), s, Request{URL: u}); err != nil {
		t.Fatal(err)
	}
	c.Close()
	_, err := c.Fetch(context.Background(), s, Request{URL: u})
	wantErr(t, err, ErrAddressRefused, codes.PermissionDenied, "10.9.9.9", "private")
}

// The dialer's Control is a second guard: whatever led to a connect, a
// refused address is not connected to.
func TestControlRefuses(t *testing.T) {
	c := newClient(t, Config{})
	for _, a := range []string{"127.0.0.1:80", "[::1]:443", "169.254.169.254:80", "[::ffff:10.0.0.1]:80", "not-an-address"} {
		if err := c.control("tcp", a, nil); !errors.Is(err, ErrAddressRefused) {
			t.Errorf("control(%s) = %v", a, err)
		}
	}
	if err := c.control("tcp", "8.8.8.8:53", nil); err != nil {
		t.Errorf("control(8.8.8.8:53) = %v", err)
	}
	// Through a real dial: the Control refuses before any connect.
	ln, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	defer ln.Close()
	_, err = c.dialer.Dial("tcp", ln.Addr().String())
	if !errors.Is(err, ErrAddressRefused) {
		t.Fatalf("dial = %v", err)
	}
}

func TestFetchRedirects(t *testing.T) {
	var srv *server
	srv = newServer(t, func(w http.ResponseWriter, r *http.Request) {
		p := srv.port
		switch r.URL.Path {
		case "/to-private":
			http.Redirect(w, r, "http://internal.test.example:"+p+"/", http.StatusFound)
		case "/to-metadata":
			http.Redirect(w, r, "http://169.254.169.254/latest/meta-data/", http.StatusFound)
		case "/to-mapped":
			http.Redirect(w, r, "http://[::ffff:127.0.0.1]:"+p+"/", http.StatusFound)
		case "/to-odd":
			http.Redirect(w, r, "http://0x7f.1:"+p+"/", http.StatusFound)
		case "/to-elsewhere":
			http.Redirect(w, r, "https://elsewhere.test.example/", http.StatusFound)
		case "/to-ok":
			http.Redirect(w, r, "/ok", http.StatusFound)
		case "/loop":
			http.Redirect(w, r, "/loop", http.StatusFound)
		default:
			echo(w, r)
		}
	})
	p := srv.port
	res := newResolver(map[string][]string{"api.test.example": {"127.0.0.1"}, "internal.test.example": {"10.0.0.5"}})
	c := newClient(t, Config{Resolver: res, AllowNets: loopback, MaxRedirects: 3})
	allow := mustAllow(t, "http://api.test.example:"+p, "http://internal.test.example:"+p, "http://169.254.169.254",
		"http://[::ffff:127.0.0.1]:"+p)
	base := "http://api.test.example:" + p
	tests := []struct {
		path     string
		sentinel error
		code     codes.Code
		part     string
	}{
		{"/to-private", ErrAddressRefused, codes.PermissionDenied, "resolves to 10.0.0.5"},
		{"/to-metadata", ErrAddressRefused, codes.PermissionDenied, "169.254.169.254 is link-local"},
		{"/to-odd", ErrInvalidURL, codes.InvalidArgument, "127.0.0.1"},
		{"/to-elsewhere", ErrHostNotAllowed, codes.PermissionDenied, "elsewhere.test.example"},
		{"/loop", ErrTooManyRedirects, codes.ResourceExhausted, "more than 3 redirects"},
	}
	for _, tt := range tests {
		t.Run(tt.path, func(t *testing.T) {
			_, err := c.Fetch(context.Background(), c.NewScope(ScopeConfig{Allow: allow}), Request{URL: base + tt.path})
			wantErr(t, err, tt.sentinel, tt.code, tt.part)
		})
	}
	// ::ffff:127.0.0.1 is 127.0.0.1, which the operator allowed here.
	resp, err := c.Fetch(context.Background(), c.NewScope(ScopeConfig{Allow: allow}), Request{URL: base + "/to-mapped"})
	if err != nil || resp.URL != "http://[::ffff:127.0.0.1]:"+p+"/" {
		t.Fatalf("to-mapped: %v, %+v", err, resp)
	}
	s := c.NewScope(ScopeConfig{Allow: allow})
	resp, err = c.Fetch(context.Background(), s, Request{URL: base + "/to-ok"})
	if err != nil || resp.URL != base+"/ok" || !strings.Contains(string(resp.Body), "GET /ok") {
		t.Fatalf("to-ok: %v, %+v", err, resp)
	}
	if strings.Contains(string(resp.Body), "Referer") {
		t.Errorf("the redirect carried a Referer:\n%s", resp.Body)
	}
	if s.Used() != 2 {
		t.Errorf("used %d requests, want 2 (a redirect is a request)", s.Used())
	}
}

func TestFetchLimits(t *testing.T) {
	release := make(chan struct{})
	t.Cleanup(func() { close(release) })
	srv := newServer(t, func(w http.ResponseWriter, r *http.Request) {
		switch r.URL.Path {
		case "/size":
			var n int
			fmt.Sscan(r.URL.Query().Get("n"), &n)
			if r.URL.Query().Get("gzip") != "" {
				w.Header().Set("Content-Encoding", "gzip")
				zw := gzip.NewWriter(w)
				zw.Write(make([]byte, n))
				zw.Close()
				return
			}
			w.Write(make([]byte, n))
		case "/discard":
			io.Copy(io.Discard, r.Body)
		case "/stall":
			select {
			case <-release:
			case <-r.Context().Done():
			}
		default:
			echo(w, r)
		}
	})
	const max = 4096
	c := newClient(t, Config{AllowNets: loopback, MaxResponseBytes: max, MaxRequestBytes: max, Timeout: time.Second})
	allow := mustAllow(t, "http://127.0.0.1:"+srv.port)
	fetch := func(s *Scope, r Request) (*Response, error) {
		if s == nil {
			s = c.NewScope(ScopeConfig{Allow: allow})
		}
		r.URL = srv.URL + r.URL
		return c.Fetch(context.Background(), s, r)
	}

	if resp, err := fetch(nil, Request{URL: fmt.Sprintf("/size?n=%d", max)}); err != nil || len(resp.Body) != max {
		t.Fatalf("a response of the limit: %v", err)
	}
	_, err := fetch(nil, Request{URL: fmt.Sprintf("/size?n=%d", max+1)})
	wantErr(t, err, ErrResponseTooLarge, codes.ResourceExhausted, "over 4096 bytes")
	// Counted decoded: a small gzip of many zeros is too large.
	_, err = fetch(nil, Request{URL: fmt.Sprintf("/size?gzip=1&n=%d", 100*max), Header: http.Header{"Accept-Encoding": {"gzip"}}})
	wantErr(t, err, ErrResponseTooLarge, codes.ResourceExhausted)

	hits := srv.hits.Load()
	if _, err := fetch(nil, Request{Method: "POST", URL: "/discard", Body: make([]byte, max)}); err != nil {
		t.Fatalf("a body of the limit: %v", err)
	}
	_, err = fetch(nil, Request{Method: "POST", URL: "/discard", Body: make([]byte, max+1)})
	wantErr(t, err, ErrRequestTooLarge, codes.InvalidArgument)
	// Through HTTPClient, a body streamed over the limit.
	req, _ := http.NewRequest("POST", srv.URL+"/discard", io.LimitReader(zeros{}, max+1))
	_, err = c.HTTPClient(c.NewScope(ScopeConfig{Allow: allow})).Do(req)
	wantErr(t, err, ErrRequestTooLarge, codes.InvalidArgument)
	if srv.hits.Load() != hits+1 {
		t.Errorf("a body over the limit reached the server")
	}

	_, err = fetch(nil, Request{URL: "/", Header: http.Header{"X-Big": {strings.Repeat("x", 64<<10)}}})
	wantErr(t, err, ErrRequestTooLarge, codes.InvalidArgument, "headers")
	if srv.hits.Load() != hits+1 {
		t.Errorf("headers over the limit reached the server")
	}

	_, err = fetch(nil, Request{URL: "/stall"})
	wantErr(t, err, ErrTimeout, codes.DeadlineExceeded)

	ctx, cancel := context.WithTimeout(context.Background(), 100*time.Millisecond)
	defer cancel()
	_, err = c.Fetch(ctx, c.NewScope(ScopeConfig{Allow: allow}), Request{URL: srv.URL + "/stall"})
	if serving.GRPCCode(err) != codes.DeadlineExceeded {
		t.Errorf("caller's deadline: %v (%v)", err, serving.GRPCCode(err))
	}

	s := c.NewScope(ScopeConfig{Allow: allow, MaxRequests: 2})
	for i := 0; i < 2; i++ {
		if _, err := fetch(s, Request{URL: "/"}); err != nil {
			t.Fatal(err)
		}
	}
	hits = srv.hits.Load()
	_, err = fetch(s, Request{URL: "/"})
	wantErr(t, err, ErrTooManyRequests, codes.ResourceExhausted, "its 2 outbound requests")
	if srv.hits.Load() != hits {
		t.Errorf("a request over the budget reached the server")
	}
}

type zeros struct{}

func (zeros) Read(p []byte) (int, error) { clear(p); return len(p), nil }

func TestFetchIgnoresProxyEnvironment(t *testing.T) {
	proxy := newServer(t, echo)
	srv := newServer(t, echo)
	for _, k := range []string{"HTTP_PROXY", "http_proxy", "HTTPS_PROXY", "https_proxy", "ALL_PROXY"} {
		t.Setenv(k, proxy.URL)
	}
	t.Setenv("NO_PROXY", "")
	t.Setenv("no_proxy", "")
	res := newResolver(map[string][]string{"api.test.example": {"127.0.0.1"}})
	c := newClient(t, Config{Resolver: res, AllowNets: loopback})
	s := c.NewScope(ScopeConfig{Allow: mustAllow(t, "http://api.test.example:"+srv.port)})
	if _, err := c.Fetch(context.Background(), s, Request{URL: "http://api.test.example:" + srv.port + "/"}); err != nil {
		t.Fatal(err)
	}
	if proxy.hits.Load() != 0 || srv.hits.Load() != 1 {
		t.Errorf("proxy hits %d, server hits %d", proxy.hits.Load(), srv.hits.Load())
	}
}

// The Host header is the URL's: a function cannot name another virtual host
// on an allowed address.
func TestFetchSetsHost(t *testing.T) {
	srv := newServer(t, echo)
	res := newResolver(map[string][]string{"api.test.example": {"127.0.0.1"}})
	c := newClient(t, Config{Resolver: res, AllowNets: loopback})
	s := c.NewScope(ScopeConfig{Allow: mustAllow(t, "http://api.test.example:"+srv.port)})
	resp, err := c.Fetch(context.Background(), s, Request{URL: "http://API.test.example.:" + srv.port + "/",
		Header: http.Header{"Host": {"admin.internal"}}})
	if err != nil {
		t.Fatal(err)
	}
	if !strings.Contains(string(resp.Body), "host=api.test.example:"+srv.port+"\n") {
		t.Errorf("server saw:\n%s", resp.Body)
	}
	req, _ := http.NewRequest("GET", "http://api.test.example:"+srv.port+"/", nil)
	req.Host = "admin.internal"
	hresp, err := c.HTTPClient(s).Do(req)
	if err != nil {
		t.Fatal(err)
	}
	body, _ := io.ReadAll(hresp.Body)
	if !strings.Contains(string(body), "host=api.test.example:"+srv.port+"\n") {
		t.Errorf("server saw:\n%s", body)
	}
}

// TLS is verified against the URL's host, which is also the SNI.
func TestFetchTLS(t *testing.T) {
	var sni atomic.Value
	srv := httptest.NewUnstartedServer(http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		sni.Store(r.TLS.ServerName)
		echo(w, r)
	}))
	srv.Config.ErrorLog = log.New(io.Discard, "", 0) // the refused handshakes
	srv.StartTLS()
	t.Cleanup(srv.Close)
	_, port, _ := net.SplitHostPort(srv.Listener.Addr().String())
	pool := srv.Client().Transport.(*http.Transport).TLSClientConfig.RootCAs
	// httptest's certificate names example.com and 127.0.0.1.
	res := newResolver(map[string][]string{"example.com": {"127.0.0.1"}, "api.test.example": {"127.0.0.1"}})
	c := newClient(t, Config{Resolver: res, AllowNets: loopback, RootCAs: pool})
	s := c.NewScope(ScopeConfig{Allow: mustAllow(t, "https://example.com:"+port, "https://api.test.example:"+port)})
	resp, err := c.Fetch(context.Background(), s, Request{URL: "https://example.com:" + port + "/tls"})
	if err != nil {
		t.Fatal(err)
	}
	if resp.StatusCode != 200 || sni.Load() != "example.com" {
		t.Errorf("status %d, SNI %v", resp.StatusCode, sni.Load())
	}
	_, err = c.Fetch(context.Background(), s, Request{URL: "https://api.test.example:" + port + "/tls"})
	wantErr(t, err, ErrUnreachable, codes.Unavailable, "certificate")
	// And the system's roots do not trust the test CA.
	c2 := newClient(t, Config{Resolver: res, AllowNets: loopback})
	_, err = c2.Fetch(context.Background(), c2.NewScope(ScopeConfig{Allow: mustAllow(t, "https://example.com:"+port)}),
		Request{URL: "https://example.com:" + port + "/tls"})
	wantErr(t, err, ErrUnreachable, codes.Unavailable, "certificate")
}

func TestConfigValidate(t *testing.T) {
	if err := (Config{}).Validate(); err != nil {
		t.Fatal(err)
	}
	for _, cfg := range []Config{
		{MaxResponseBytes: -1}, {Timeout: -time.Second}, {MaxRedirects: -1},
		{AllowNets: []netip.Prefix{netip.MustParsePrefix("10.1.2.3/8")}},
	} {
		if _, err := New(cfg); err == nil {
			t.Errorf("New(%+v) accepted", cfg)
		}
	}
}
