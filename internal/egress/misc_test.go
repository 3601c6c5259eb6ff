package egress

import (
	"context"
	"errors"
	"fmt"
	"net"
	"net/http"
	"net/netip"
	"sync"
	"testing"
	"time"

	"google.golang.org/grpc/codes"

	"github.com/hivemind/taskworker/internal/serving"
)

var (
	_ Resolver          = (*net.Resolver)(nil)
	_ Resolver          = SystemResolver{}
	_ http.RoundTripper = (*guard)(nil)
)

// The system's resolver: localhost comes from the hosts file, and is
// refused as loopback.
func TestSystemResolverLocalhost(t *testing.T) {
	srv := newServer(t, echo)
	c := newClient(t, Config{})
	s := c.NewScope(ScopeConfig{Allow: mustAllow(t, "http://localhost:"+srv.port)})
	_, err := c.Fetch(context.Background(), s, Request{URL: "http://localhost:" + srv.port + "/"})
	if errors.Is(err, ErrUnreachable) {
		t.Skipf("no hosts entry for localhost here: %v", err)
	}
	wantErr(t, err, ErrAddressRefused, codes.PermissionDenied, "host localhost resolves to", "loopback")
	if srv.hits.Load() != 0 {
		t.Error("the server was reached")
	}
}

// A resolver that does not answer is bounded by DialTimeout.
func TestSlowResolver(t *testing.T) {
	c := newClient(t, Config{DialTimeout: 100 * time.Millisecond, Resolver: blockingResolver{}})
	s := c.NewScope(ScopeConfig{Allow: mustAllow(t, "https://slow.test.example")})
	_, err := c.Fetch(context.Background(), s, Request{URL: "https://slow.test.example/"})
	wantErr(t, err, ErrUnreachable, codes.Unavailable, "resolving slow.test.example")
}

type blockingResolver struct{}

func (blockingResolver) LookupNetIP(ctx context.Context, _, _ string) ([]netip.Addr, error) {
	<-ctx.Done()
	return nil, ctx.Err()
}

// The budget holds under concurrent requests of one call.
func TestScopeBudgetConcurrent(t *testing.T) {
	srv := newServer(t, echo)
	c := newClient(t, Config{AllowNets: loopback})
	s := c.NewScope(ScopeConfig{Allow: mustAllow(t, "http://127.0.0.1:"+srv.port), MaxRequests: 5})
	var wg sync.WaitGroup
	errs := make(chan error, 20)
	for i := 0; i < 20; i++ {
		wg.Add(1)
		go func() {
			defer wg.Done()
			_, err := c.Fetch(context.Background(), s, Request{URL: srv.URL})
			errs <- err
		}()
	}
	wg.Wait()
	close(errs)
	ok, refused := 0, 0
	for err := range errs {
		switch {
		case err == nil:
			ok++
		case errors.Is(err, ErrTooManyRequests):
			refused++
		default:
			t.Error(err)
		}
	}
	if ok != 5 || refused != 15 || srv.hits.Load() != 5 || s.Used() != 5 {
		t.Errorf("ok %d, refused %d, hits %d, used %d", ok, refused, srv.hits.Load(), s.Used())
	}
}

func TestGRPCCode(t *testing.T) {
	tests := []struct {
		err  error
		want codes.Code
	}{
		{nil, codes.OK},
		{fmt.Errorf("x: %w", ErrInvalidRule), codes.InvalidArgument},
		{ErrInvalidNet, codes.InvalidArgument},
		{ErrInvalidURL, codes.InvalidArgument},
		{ErrTemplate, codes.InvalidArgument},
		{ErrRequestTooLarge, codes.InvalidArgument},
		{ErrHostNotAllowed, codes.PermissionDenied},
		{&AddressError{Addr: netip.MustParseAddr("10.0.0.1")}, codes.PermissionDenied},
		{ErrSecretNotGranted, codes.PermissionDenied},
		{ErrTooManyRequests, codes.ResourceExhausted},
		{ErrTooManyRedirects, codes.ResourceExhausted},
		{ErrResponseTooLarge, codes.ResourceExhausted},
		{ErrTimeout, codes.DeadlineExceeded},
		{context.DeadlineExceeded, codes.DeadlineExceeded},
		{context.Canceled, codes.Canceled},
		{ErrUnreachable, codes.Unavailable},
		{errors.New("not ours"), codes.Unknown},
	}
	for _, tt := range tests {
		if got := serving.GRPCCode(tt.err); got != tt.want {
			t.Errorf("serving.GRPCCode(%v) = %v, want %v", tt.err, got, tt.want)
		}
		if st := serving.GRPCStatus(tt.err); st.Code() != tt.want || tt.err != nil && st.Message() != tt.err.Error() {
			t.Errorf("serving.GRPCStatus(%v) = %v", tt.err, st)
		}
	}
}

func TestAccessors(t *testing.T) {
	nets := []netip.Prefix{netip.MustParsePrefix("10.1.0.0/16")}
	c := newClient(t, Config{AllowNets: nets})
	if got := c.Policy().Allowed(); len(got) != 1 || got[0] != nets[0] {
		t.Errorf("Allowed = %v", got)
	}
	a := mustAllow(t, "https://a.example", "http://b.example:81")
	if rs := a.Rules(); len(rs) != 2 || rs[1].String() != "http://b.example:81" {
		t.Errorf("Rules = %v", rs)
	}
	var none *Allowlist
	if none.Rules() != nil || none.String() != "(none)" {
		t.Error("nil allowlist")
	}
}
