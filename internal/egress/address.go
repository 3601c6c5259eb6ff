package egress

import (
	"fmt"
	"net/netip"
	"strings"
)

// AllowNetFlag is the operator's flag that allows a refused network; error
// messages name it so that the operator knows what to change.
const AllowNetFlag = "--egress-allow-net"

// blockedRange is a network outbound requests may not reach unless the
// operator allows it, and the name a person knows it by.
type blockedRange struct {
	prefix netip.Prefix
	name   string
}

func mustRanges(rs ...string) []blockedRange {
	out := make([]blockedRange, 0, len(rs)/2)
	for i := 0; i < len(rs); i += 2 {
		out = append(out, blockedRange{netip.MustParsePrefix(rs[i]), rs[i+1]})
	}
	return out
}

// blocked lists the special-purpose networks (the IANA registries of IPv4
// and IPv6 special-purpose addresses) that are not the public internet.
// Order matters only for the name a message gives: the first match wins.
var blocked = mustRanges(
	// IPv4.
	"255.255.255.255/32", "broadcast",
	"0.0.0.0/8", "unspecified (this network)",
	"10.0.0.0/8", "private (RFC 1918)",
	"100.64.0.0/10", "carrier-grade NAT (shared address space)",
	"127.0.0.0/8", "loopback",
	"169.254.0.0/16", "link-local (where cloud metadata services answer)",
	"172.16.0.0/12", "private (RFC 1918)",
	"192.0.0.0/24", "reserved (IETF protocol assignments)",
	"192.0.2.0/24", "documentation",
	"192.31.196.0/24", "reserved (AS112)",
	"192.52.193.0/24", "reserved (AMT)",
	"192.88.99.0/24", "reserved (6to4 relay anycast)",
	"192.168.0.0/16", "private (RFC 1918)",
	"192.175.48.0/24", "reserved (AS112 direct delegation)",
	"198.18.0.0/15", "benchmarking",
	"198.51.100.0/24", "documentation",
	"203.0.113.0/24", "documentation",
	"224.0.0.0/4", "multicast",
	"240.0.0.0/4", "reserved",
	// IPv6. The forms that embed an IPv4 address are checked by what they
	// embed (embedded, below) before this list.
	"::/128", "unspecified",
	"::1/128", "loopback",
	"64:ff9b:1::/48", "local-use NAT64",
	"100::/64", "discard-only",
	"2001:2::/48", "benchmarking",
	"2001:10::/28", "reserved (ORCHID)",
	"2001:db8::/32", "documentation",
	"3fff::/20", "documentation",
	"5f00::/16", "reserved (SRv6 SIDs)",
	"fc00::/7", "unique-local",
	"fe80::/10", "link-local",
	"fec0::/10", "site-local (deprecated)",
	"ff00::/8", "multicast",
)

// embedded is the IPv4 address an IPv6 address carries in one of the forms
// that route to it (IPv4-compatible, NAT64, 6to4, Teredo), and the form's
// name (IPv4-translated is SIIT's ::ffff:0:a.b.c.d). IPv4-mapped addresses are unmapped before, since the kernel dials
// them as IPv4.
func embedded(a netip.Addr) (netip.Addr, string, bool) {
	if !a.Is6() {
		return netip.Addr{}, "", false
	}
	b := a.As16()
	v4 := func(i int) netip.Addr { return netip.AddrFrom4([4]byte(b[i : i+4])) }
	switch {
	case prefixIPv4Compatible.Contains(a) && a != netip.IPv6Unspecified() && a != netip.IPv6Loopback():
		return v4(12), "IPv4-compatible", true
	case prefixNAT64.Contains(a):
		return v4(12), "NAT64", true
	case prefixIPv4Translated.Contains(a):
		return v4(12), "IPv4-translated", true
	case prefix6to4.Contains(a):
		return v4(2), "6to4", true
	case prefixTeredo.Contains(a):
		// The client's address, obfuscated (inverted) in the last 32 bits.
		c := [4]byte(b[12:16])
		for i := range c {
			c[i] ^= 0xff
		}
		return netip.AddrFrom4(c), "Teredo", true
	}
	return netip.Addr{}, "", false
}

var (
	prefixIPv4Mapped     = netip.MustParsePrefix("::ffff:0:0/96")
	prefixIPv4Compatible = netip.MustParsePrefix("::/96")
	prefixNAT64          = netip.MustParsePrefix("64:ff9b::/96")
	prefixIPv4Translated = netip.MustParsePrefix("::ffff:0:0:0/96")
	prefix6to4           = netip.MustParsePrefix("2002::/16")
	prefixTeredo         = netip.MustParsePrefix("2001::/32")
)

// AddressError is a refused address: which address, in which range, and, when
// it came from a name, which name.
type AddressError struct {
	Host   string       // the name that resolved to Addr, or "" for a literal
	Addr   netip.Addr   // the address refused, as given
	Inner  netip.Addr   // the IPv4 address Addr embeds, when the refusal is about it
	Form   string       // how Addr embeds Inner: "IPv4-mapped", "NAT64", ...
	Range  netip.Prefix // the refused network; invalid for a malformed address
	Reason string       // the range's name ("loopback"), or why the address is malformed
}

func (e *AddressError) Error() string {
	var b strings.Builder
	if e.Host != "" {
		fmt.Fprintf(&b, "host %s resolves to ", e.Host)
	}
	b.WriteString(e.Addr.String())
	if e.Inner.IsValid() {
		fmt.Fprintf(&b, " (the %s form of %s)", e.Form, e.Inner)
	}
	if !e.Range.IsValid() {
		fmt.Fprintf(&b, ": %s: outbound requests may not reach it", e.Reason)
		return b.String()
	}
	fmt.Fprintf(&b, " is %s, in %s: outbound requests may not reach it; the pool's operator may allow that network with %s %s",
		e.Reason, e.Range, AllowNetFlag, e.Range)
	return b.String()
}

func (e *AddressError) Unwrap() error { return ErrAddressRefused }

// Policy says which addresses outbound requests may reach: every address
// except those in special-purpose ranges (loopback, private, link-local,
// ...), unless the operator allows a network explicitly. Its zero value
// allows no special-purpose network.
type Policy struct {
	allow []netip.Prefix
}

// NewPolicy is the policy that also allows the networks in allow. A network
// written in the IPv4-mapped form (::ffff:10.0.0.0/104) allows the IPv4
// network, as the kernel dials those addresses as IPv4.
func NewPolicy(allow []netip.Prefix) (*Policy, error) {
	p := &Policy{}
	for _, n := range allow {
		if !n.IsValid() {
			return nil, fmt.Errorf("network %q is not valid: write it as an address and a prefix length, like 10.1.0.0/16: %w", n, ErrInvalidNet)
		}
		if n.Addr().Is4In6() && n.Bits() >= 96 {
			n = netip.PrefixFrom(n.Addr().Unmap(), n.Bits()-96)
		}
		if m := n.Masked(); m != n {
			return nil, fmt.Errorf("network %s has host bits set: did you mean %s?: %w", n, m, ErrInvalidNet)
		}
		p.allow = append(p.allow, n)
	}
	return p, nil
}

// ParseNets parses the operator's networks (10.1.0.0/16, fd00::/8; a bare
// address is its own /32 or /128) for NewPolicy.
func ParseNets(ss []string) ([]netip.Prefix, error) {
	out := make([]netip.Prefix, 0, len(ss))
	for _, s := range ss {
		if !strings.Contains(s, "/") {
			a, err := netip.ParseAddr(s)
			if err != nil {
				return nil, fmt.Errorf("network %q is not an address or a network like 10.1.0.0/16: %w", s, ErrInvalidNet)
			}
			out = append(out, netip.PrefixFrom(a, a.BitLen()))
			continue
		}
		n, err := netip.ParsePrefix(s)
		if err != nil {
			return nil, fmt.Errorf("network %q is not a network like 10.1.0.0/16: %w", s, ErrInvalidNet)
		}
		out = append(out, n)
	}
	return out, nil
}

// Allowed lists the networks the operator allowed.
func (p *Policy) Allowed() []netip.Prefix { return append([]netip.Prefix(nil), p.allow...) }

func (p *Policy) allows(a netip.Addr) bool {
	for _, n := range p.allow {
		if n.Contains(a) {
			return true
		}
	}
	return false
}

// Check returns nil if outbound requests may reach a, or an *AddressError
// (wrapping ErrAddressRefused) that names the range that refuses it.
func (p *Policy) Check(a netip.Addr) error {
	if !a.IsValid() {
		return &AddressError{Addr: a, Reason: "not a valid address"}
	}
	if a.Zone() != "" {
		return &AddressError{Addr: a, Reason: "an address with a zone (interface) names a local link"}
	}
	// The kernel dials an IPv4-mapped address as the IPv4 address itself:
	// check that one.
	if a.Is4In6() {
		if err := p.Check(a.Unmap()); err != nil {
			ae := err.(*AddressError)
			return &AddressError{Addr: a, Inner: a.Unmap(), Form: "IPv4-mapped", Range: ae.Range, Reason: ae.Reason}
		}
		return nil
	}
	if p.allows(a) {
		return nil
	}
	if inner, form, ok := embedded(a); ok {
		if err := p.Check(inner); err != nil {
			ae := err.(*AddressError)
			return &AddressError{Addr: a, Inner: inner, Form: form, Range: ae.Range, Reason: ae.Reason}
		}
	}
	for _, r := range blocked {
		if r.prefix.Contains(a) {
			return &AddressError{Addr: a, Range: r.prefix, Reason: r.name}
		}
	}
	return nil
}
