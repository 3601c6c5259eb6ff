package egress

import (
	"errors"
	"fmt"
	"net/netip"
	"net/url"
	"strconv"
	"strings"
	"unicode/utf8"

	"golang.org/x/net/idna"
)

// Target is where a URL goes, normalised: the form every check compares and
// the form the request is sent to.
type Target struct {
	Scheme string     // "http" or "https"
	Host   string     // lower-case ASCII (IDNA), no trailing dot; an IP literal in canonical form, IPv6 without brackets
	Port   uint16     // explicit, or the scheme's default
	Addr   netip.Addr // the address when Host is an IP literal
}

// String is the target as a rule would name it: scheme://host:port.
func (t Target) String() string {
	return t.Scheme + "://" + joinHostPort(t.Host, t.Port)
}

func joinHostPort(host string, port uint16) string {
	if strings.Contains(host, ":") {
		host = "[" + host + "]"
	}
	return host + ":" + strconv.Itoa(int(port))
}

// defaultPort is the port of each scheme outbound requests may use.
var defaultPort = map[string]uint16{"http": 80, "https": 443}

// hostProfile is how names are turned into ASCII: IDNA's lookup mapping
// (case folded, full-width characters mapped), STD3 rules (letters, digits
// and hyphens), DNS lengths checked.
var hostProfile = idna.New(idna.MapForLookup(), idna.Transitional(false), idna.BidiRule(), idna.VerifyDNSLength(true))

// normalizeHost turns a URL's host (without port or brackets) into its one
// canonical form. IPv4 literals are accepted only as four decimal numbers:
// forms a C resolver would also accept (2130706433, 0x7f.1, 017700000001,
// 127.1) are refused, naming the address they stand for, because one layer
// reading them as a name and another as an address is how checks are
// bypassed.
func normalizeHost(h string) (string, netip.Addr, error) {
	if h == "" {
		return "", netip.Addr{}, fmt.Errorf("the URL has no host: %w", ErrInvalidURL)
	}
	if strings.Contains(h, ":") { // IPv6, from inside brackets
		a, err := netip.ParseAddr(h)
		if err != nil {
			return "", netip.Addr{}, fmt.Errorf("host [%s] is not an IPv6 address: %w", h, ErrInvalidURL)
		}
		if a.Zone() != "" {
			return "", netip.Addr{}, fmt.Errorf("host [%s] has a zone: outbound requests may not name a local interface: %w", h, ErrInvalidURL)
		}
		return a.String(), a, nil
	}
	name := strings.TrimSuffix(h, ".")
	if name == "" || strings.HasSuffix(name, ".") || strings.HasPrefix(name, ".") {
		return "", netip.Addr{}, fmt.Errorf("host %q has an empty label: %w", h, ErrInvalidURL)
	}
	if looksNumeric(name) {
		a, canonical, ok := parseIPv4Loose(name)
		switch {
		case !ok:
			return "", netip.Addr{}, fmt.Errorf("host %q ends in a number but is not an IPv4 address: %w", h, ErrInvalidURL)
		case !canonical:
			return "", netip.Addr{}, fmt.Errorf("host %q is an unusual way to write the IPv4 address %s: write it as %s (four decimal numbers): %w", h, a, a, ErrInvalidURL)
		}
		return a.String(), a, nil
	}
	ascii, err := hostProfile.ToASCII(name)
	if err == nil {
		// The ASCII form must be its own ASCII form, or two layers
		// could read one name two ways.
		again, err2 := hostProfile.ToASCII(ascii)
		if err2 != nil || again != ascii {
			err = errors.New("not stable")
		}
	}
	if err != nil || ascii == "" || !utf8.ValidString(name) {
		return "", netip.Addr{}, fmt.Errorf("host %q is not a valid host name (letters, digits and hyphens in dot-separated labels, or an internationalised name): %w", h, ErrInvalidURL)
	}
	// A name whose last label maps to digits (full-width digits, say) is
	// an address in disguise: refuse it too.
	if looksNumeric(ascii) {
		return "", netip.Addr{}, fmt.Errorf("host %q reads as the number %q: write IPv4 addresses as four decimal numbers: %w", h, ascii, ErrInvalidURL)
	}
	return ascii, netip.Addr{}, nil
}

// looksNumeric reports whether a host's last label is a number (decimal,
// octal or 0x-hex), which is how URL parsers and C resolvers decide that a
// host is an IPv4 address.
func looksNumeric(name string) bool {
	last := name[strings.LastIndexByte(name, '.')+1:]
	if last == "" {
		return false
	}
	if strings.HasPrefix(last, "0x") || strings.HasPrefix(last, "0X") {
		return true // "0x" alone counts, as in inet_aton
	}
	for i := 0; i < len(last); i++ {
		if last[i] < '0' || last[i] > '9' {
			return false
		}
	}
	return true
}

// parseIPv4Loose parses s as inet_aton does (one to four parts, each
// decimal, 0-octal or 0x-hex, the last filling the remaining bytes), and
// reports whether s was already canonical dotted decimal.
func parseIPv4Loose(s string) (netip.Addr, bool, bool) {
	parts := strings.Split(s, ".")
	if len(parts) > 4 {
		return netip.Addr{}, false, false
	}
	nums := make([]uint64, len(parts))
	for i, p := range parts {
		base, digits := 10, p
		switch {
		case strings.HasPrefix(p, "0x") || strings.HasPrefix(p, "0X"):
			base, digits = 16, p[2:]
			if digits == "" {
				digits = "0"
			}
		case len(p) > 1 && p[0] == '0':
			base, digits = 8, p[1:]
		}
		if digits == "" || len(digits) > 12 {
			return netip.Addr{}, false, false
		}
		n, err := strconv.ParseUint(digits, base, 64)
		if err != nil {
			return netip.Addr{}, false, false
		}
		nums[i] = n
	}
	var v uint64
	for i, n := range nums[:len(nums)-1] {
		if n > 255 {
			return netip.Addr{}, false, false
		}
		v |= n << (24 - 8*i)
	}
	last := nums[len(nums)-1]
	if last >= 1<<(8*(5-len(nums))) {
		return netip.Addr{}, false, false
	}
	v |= last
	a := netip.AddrFrom4([4]byte{byte(v >> 24), byte(v >> 16), byte(v >> 8), byte(v)})
	return a, a.String() == s, true
}

// ParseURL parses raw as the URL of an outbound request and returns it
// normalised (host as Target.Host, no user info, no fragment) with its
// target. It refuses schemes other than http and https, user info (send
// credentials in a header), and unusual host forms.
func ParseURL(raw string) (*url.URL, Target, error) {
	u, err := url.Parse(raw)
	if err != nil {
		return nil, Target{}, fmt.Errorf("%q is not a URL: %w", cut(raw), ErrInvalidURL)
	}
	t, err := targetOf(u)
	if err != nil {
		return nil, Target{}, err
	}
	return u, t, nil
}

// targetOf checks u as ParseURL does and normalises its host in place.
func targetOf(u *url.URL) (Target, error) {
	scheme := strings.ToLower(u.Scheme)
	port, ok := defaultPort[scheme]
	if !ok {
		return Target{}, fmt.Errorf("URL %q: scheme %q is not allowed: use http or https: %w", cut(u.Redacted()), u.Scheme, ErrInvalidURL)
	}
	if u.Opaque != "" || u.Host == "" {
		return Target{}, fmt.Errorf("URL %q has no host: write it as %s://host/path: %w", cut(u.Redacted()), scheme, ErrInvalidURL)
	}
	if u.User != nil {
		return Target{}, fmt.Errorf("URL %q carries user info: send credentials in a header (with a {{secret:NAME}} template): %w", cut(u.Redacted()), ErrInvalidURL)
	}
	if p := u.Port(); p != "" {
		n, err := strconv.ParseUint(p, 10, 16)
		if err != nil || n == 0 {
			return Target{}, fmt.Errorf("URL %q: port %q is not a number from 1 to 65535: %w", cut(u.Redacted()), p, ErrInvalidURL)
		}
		port = uint16(n)
	} else if strings.HasSuffix(u.Host, ":") {
		return Target{}, fmt.Errorf("URL %q has an empty port: %w", cut(u.Redacted()), ErrInvalidURL)
	}
	host, addr, err := normalizeHost(u.Hostname())
	if err != nil {
		return Target{}, err
	}
	t := Target{Scheme: scheme, Host: host, Port: port, Addr: addr}
	u.Scheme = scheme
	u.Host = joinHostPort(host, port)
	if port == defaultPort[scheme] {
		u.Host = strings.TrimSuffix(u.Host, ":"+strconv.Itoa(int(port)))
	}
	u.Fragment, u.RawFragment = "", ""
	return t, nil
}

// cut shortens s for an error message.
func cut(s string) string {
	const max = 200
	if len(s) <= max {
		return s
	}
	for i := max; i > 0; i-- {
		if s[i]&0xc0 != 0x80 {
			return s[:i] + "..."
		}
	}
	return s[:max] + "..."
}
