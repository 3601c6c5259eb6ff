package egress

import (
	"context"
	"crypto/x509"
	"fmt"
	"net"
	"net/netip"
	"time"
)

// Config is the operator's settings of the egress client: the same for every
// function. What differs per function and per call (its allowlist, its
// grants, its request budget) is a Scope's.
type Config struct {
	// AllowNets are networks outbound requests may reach although they are
	// special-purpose (--egress-allow-net): say, an internal API's subnet.
	// Never the pool's own addresses or etcd's.
	AllowNets []netip.Prefix
	// Resolver resolves host names; nil is the system's resolver.
	Resolver Resolver
	// RootCAs verifies servers' certificates; nil is the system's roots.
	RootCAs *x509.CertPool

	MaxRequestBytes  int64         // a request body's size; default 1 MiB
	MaxResponseBytes int64         // a response body's size, after decoding; default 8 MiB
	MaxHeaderBytes   int64         // a request's URL and headers, and a response's headers; default 64 KiB
	Timeout          time.Duration // one request, redirects and body included; default 30 s
	DialTimeout      time.Duration // resolving, connecting and the TLS handshake; default 10 s
	MaxRedirects     int           // redirects followed per request; default 5
	// MaxRequestsPerCall is a Scope's default budget of outbound requests
	// (each redirect is one); default 32.
	MaxRequestsPerCall int
}

// DefaultConfig is the configuration New completes a Config's zero fields
// from.
func DefaultConfig() Config {
	return Config{
		MaxRequestBytes:    1 << 20,
		MaxResponseBytes:   8 << 20,
		MaxHeaderBytes:     64 << 10,
		Timeout:            30 * time.Second,
		DialTimeout:        10 * time.Second,
		MaxRedirects:       5,
		MaxRequestsPerCall: 32,
	}
}

// withDefaults fills c's zero fields from DefaultConfig.
func (c Config) withDefaults() Config {
	d := DefaultConfig()
	set := func(v *int64, def int64) {
		if *v == 0 {
			*v = def
		}
	}
	set(&c.MaxRequestBytes, d.MaxRequestBytes)
	set(&c.MaxResponseBytes, d.MaxResponseBytes)
	set(&c.MaxHeaderBytes, d.MaxHeaderBytes)
	if c.Timeout == 0 {
		c.Timeout = d.Timeout
	}
	if c.DialTimeout == 0 {
		c.DialTimeout = d.DialTimeout
	}
	if c.MaxRedirects == 0 {
		c.MaxRedirects = d.MaxRedirects
	}
	if c.MaxRequestsPerCall == 0 {
		c.MaxRequestsPerCall = d.MaxRequestsPerCall
	}
	return c
}

// Validate says what to change in c; zero fields are taken as their
// defaults.
func (c Config) Validate() error {
	for _, f := range []struct {
		name string
		v    int64
	}{
		{"MaxRequestBytes", c.MaxRequestBytes},
		{"MaxResponseBytes", c.MaxResponseBytes},
		{"MaxHeaderBytes", c.MaxHeaderBytes},
		{"Timeout", int64(c.Timeout)},
		{"DialTimeout", int64(c.DialTimeout)},
		{"MaxRedirects", int64(c.MaxRedirects)},
		{"MaxRequestsPerCall", int64(c.MaxRequestsPerCall)},
	} {
		if f.v < 0 {
			return fmt.Errorf("egress: %s (%d) is negative: set it to 0 for its default or to a positive limit", f.name, f.v)
		}
	}
	if _, err := NewPolicy(c.AllowNets); err != nil {
		return fmt.Errorf("egress: AllowNets: %w", err)
	}
	return nil
}

// Resolver resolves a host name (lower-case ASCII, no trailing dot) to its
// addresses; network is "ip". *net.Resolver is one; the pool's DNS service
// may be another. Every address it returns is checked before any is dialled.
type Resolver interface {
	LookupNetIP(ctx context.Context, network, host string) ([]netip.Addr, error)
}

// SystemResolver is the system's resolver, with the system's rules (the
// hosts file, search domains). Whatever it answers, the address policy
// judges: a search domain that turns a name into an internal one leads to an
// internal address, which is refused unless the operator allowed its network.
type SystemResolver struct{}

// LookupNetIP resolves host.
func (SystemResolver) LookupNetIP(ctx context.Context, network, host string) ([]netip.Addr, error) {
	return net.DefaultResolver.LookupNetIP(ctx, network, host)
}
