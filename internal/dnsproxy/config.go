package dnsproxy

import (
	"errors"
	"fmt"
	"net"
	"net/netip"
	"time"
)

// Config holds a resolver's settings. Start from [DefaultConfig]; [New]
// checks it with [Config.Validate].
type Config struct {
	// Zone is the network's own zone: <function>.<Zone> answers with the
	// addresses serving the function (see the package documentation).
	Zone string

	// Upstreams are the recursive resolvers asked for every other name, as
	// host:port, tried in order. Empty: the nameservers of ResolvConf.
	Upstreams []string
	// ResolvConf is read when Upstreams is empty.
	ResolvConf string
	// UpstreamTimeout bounds one exchange with one upstream server.
	UpstreamTimeout time.Duration

	// CacheEntries bounds the cache: one entry per (name, type) asked or
	// met in a CNAME chain; the least recently used goes first.
	CacheEntries int
	// MinTTL and MaxTTL clamp the time an answer is cached (and the TTL
	// returned): records' own TTLs inside these bounds are honoured.
	MinTTL, MaxTTL time.Duration
	// MaxNegativeTTL caps the caching of NXDOMAIN and NODATA answers, which
	// otherwise last as long as their SOA says (RFC 2308).
	MaxNegativeTTL time.Duration
	// ZoneTTL is the TTL of the zone's answers: how long a client may keep
	// using a worker's address after it stops serving.
	ZoneTTL time.Duration
	// MaxCNAMEChain bounds the CNAMEs followed for one name.
	MaxCNAMEChain int

	// Recursive lists the sources the DNS listener answers names outside
	// the zone for (under the same policy, as the user ""). Empty: the
	// listener answers only the zone and refuses the rest, so it is never an
	// open resolver.
	Recursive []netip.Prefix
	// RatePerSource and RateBurst are the listener's token bucket per source
	// address: RateBurst queries at once, refilled at RatePerSource a second.
	RatePerSource float64
	RateBurst     int
	// RateSources bounds the sources tracked at once (see the caveats).
	RateSources int
	// UDPSize is the largest UDP answer the listener sends to a client that
	// advertises more with EDNS0 (clients without EDNS0 get 512 bytes).
	UDPSize int

	// Now is the clock of the cache and the rate limiter; nil: time.Now.
	Now func() time.Time
}

// DefaultConfig returns the settings the pool uses unless told otherwise.
func DefaultConfig() Config {
	return Config{
		Zone:            "fn.taskworker.internal",
		ResolvConf:      "/etc/resolv.conf",
		UpstreamTimeout: 2 * time.Second,
		CacheEntries:    10000,
		MinTTL:          5 * time.Second,
		MaxTTL:          time.Hour,
		MaxNegativeTTL:  30 * time.Second,
		ZoneTTL:         5 * time.Second,
		MaxCNAMEChain:   8,
		RatePerSource:   100,
		RateBurst:       200,
		RateSources:     10000,
		UDPSize:         1232,
	}
}

// Validate says what to change in c for [New] to accept it.
func (c Config) Validate() error {
	var errs []error
	if _, err := Normalize(c.Zone); err != nil {
		errs = append(errs, fmt.Errorf("Zone %q is not a domain name (%w); use a name such as fn.taskworker.internal", c.Zone, err))
	}
	for _, u := range c.Upstreams {
		if _, _, err := net.SplitHostPort(u); err != nil {
			errs = append(errs, fmt.Errorf("upstream %q is not host:port (%w); write it as 192.0.2.53:53 or [2001:db8::53]:53", u, err))
		}
	}
	if len(c.Upstreams) == 0 && c.ResolvConf == "" {
		errs = append(errs, errors.New("no upstream resolver: set Upstreams or ResolvConf (the system's is /etc/resolv.conf)"))
	}
	if c.UpstreamTimeout <= 0 {
		errs = append(errs, fmt.Errorf("UpstreamTimeout (%s) must be positive; 2s is the default", c.UpstreamTimeout))
	}
	if c.CacheEntries < 1 {
		errs = append(errs, fmt.Errorf("CacheEntries (%d) must be at least 1", c.CacheEntries))
	}
	if c.MinTTL < 0 || c.MaxTTL < c.MinTTL {
		errs = append(errs, fmt.Errorf("MinTTL (%s) must be >= 0 and <= MaxTTL (%s)", c.MinTTL, c.MaxTTL))
	}
	if c.MaxNegativeTTL < 0 {
		errs = append(errs, fmt.Errorf("MaxNegativeTTL (%s) must be >= 0 (0 turns negative caching off)", c.MaxNegativeTTL))
	}
	if c.ZoneTTL < time.Second {
		errs = append(errs, fmt.Errorf("ZoneTTL (%s) must be at least 1s (DNS counts TTLs in seconds)", c.ZoneTTL))
	}
	if c.MaxCNAMEChain < 1 {
		errs = append(errs, fmt.Errorf("MaxCNAMEChain (%d) must be at least 1", c.MaxCNAMEChain))
	}
	if c.RatePerSource <= 0 || c.RateBurst < 1 {
		errs = append(errs, fmt.Errorf("RatePerSource (%g) must be positive and RateBurst (%d) at least 1", c.RatePerSource, c.RateBurst))
	}
	if c.RateSources < 1 {
		errs = append(errs, fmt.Errorf("RateSources (%d) must be at least 1", c.RateSources))
	}
	if c.UDPSize < 512 || c.UDPSize > 65535 {
		errs = append(errs, fmt.Errorf("UDPSize (%d) must be between 512 and 65535; 1232 avoids IP fragmentation", c.UDPSize))
	}
	return errors.Join(errs...)
}
