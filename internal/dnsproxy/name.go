package dnsproxy

import (
	"fmt"
	"net/netip"
	"strings"

	"github.com/miekg/dns"
)

// maxNameLength is the longest name in presentation form without its final
// dot (RFC 1035: 255 octets on the wire).
const maxNameLength = 253

// Normalize returns name in the one form the resolver keys on: ASCII lower
// case, fully qualified (one trailing dot). It accepts what a person or a
// program would type, with or without the final dot, and refuses anything a
// resolver should never send upstream: empty labels, labels over 63
// characters, names over 253, characters other than letters, digits, '-'
// and '_' (so no escapes, spaces or non-ASCII: write internationalized names
// in their "xn--" form), and IP address literals, which are not names.
func Normalize(name string) (string, error) {
	shown := name
	if len(shown) > 80 {
		shown = shown[:80] + "..."
	}
	trimmed := strings.TrimSuffix(name, ".")
	if trimmed == "" {
		return "", fmt.Errorf("%w: the name is empty", ErrInvalidName)
	}
	if len(trimmed) > maxNameLength {
		return "", fmt.Errorf("%w: %q is %d characters long; a name has at most %d", ErrInvalidName, shown, len(trimmed), maxNameLength)
	}
	if _, err := netip.ParseAddr(strings.Trim(trimmed, "[]")); err == nil {
		return "", fmt.Errorf("%w: %q is an IP address, not a name: connect to it directly (under the egress policy) instead of resolving it", ErrInvalidName, shown)
	}
	var b strings.Builder
	b.Grow(len(trimmed) + 1)
	labelLen := 0
	for i := 0; i < len(trimmed); i++ {
		c := trimmed[i]
		switch {
		case c == '.':
			if labelLen == 0 {
				return "", fmt.Errorf("%w: %q has an empty label (two dots in a row, or a leading dot)", ErrInvalidName, shown)
			}
			labelLen = 0
			b.WriteByte('.')
			continue
		case c >= 'A' && c <= 'Z':
			c += 'a' - 'A'
		case c >= 'a' && c <= 'z', c >= '0' && c <= '9', c == '-', c == '_':
		default:
			return "", fmt.Errorf("%w: %q has the character %q at offset %d; use letters, digits, '-', '_' and '.' (internationalized names in their xn-- form)", ErrInvalidName, shown, rune(c), i)
		}
		labelLen++
		if labelLen > 63 {
			return "", fmt.Errorf("%w: %q has a label longer than 63 characters", ErrInvalidName, shown)
		}
		b.WriteByte(c)
	}
	if labelLen == 0 {
		return "", fmt.Errorf("%w: %q has an empty label", ErrInvalidName, shown)
	}
	b.WriteByte('.')
	return b.String(), nil
}

// TypeAddresses is the type that asks for A and AAAA records together, what
// the API's empty record_type means.
const TypeAddresses uint16 = 0

// supportedTypes are the record types the resolver answers.
var supportedTypes = map[string]uint16{
	"A":     dns.TypeA,
	"AAAA":  dns.TypeAAAA,
	"CNAME": dns.TypeCNAME,
	"TXT":   dns.TypeTXT,
	"SRV":   dns.TypeSRV,
}

// ParseType turns a record type's name (any case; empty for A and AAAA)
// into its number.
func ParseType(s string) (uint16, error) {
	if s == "" {
		return TypeAddresses, nil
	}
	if t, ok := supportedTypes[strings.ToUpper(s)]; ok {
		return t, nil
	}
	if len(s) > 20 {
		s = s[:20] + "..."
	}
	return 0, fmt.Errorf("%w: %q; use A, AAAA, CNAME, TXT or SRV, or leave it empty for A and AAAA", ErrInvalidType, s)
}

// typeName is the name of a type ParseType accepts.
func typeName(t uint16) string {
	if t == TypeAddresses {
		return "A/AAAA"
	}
	return dns.TypeToString[t]
}

func checkType(t uint16) error {
	switch t {
	case TypeAddresses, dns.TypeA, dns.TypeAAAA, dns.TypeCNAME, dns.TypeTXT, dns.TypeSRV:
		return nil
	}
	return fmt.Errorf("%w: type %d; use A, AAAA, CNAME, TXT or SRV", ErrInvalidType, t)
}

// display is a normalized name as people write it: without the final dot.
func display(fqdn string) string { return strings.TrimSuffix(fqdn, ".") }
