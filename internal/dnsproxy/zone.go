package dnsproxy

import (
	"encoding/hex"
	"fmt"
	"net/netip"
	"strings"

	"github.com/miekg/dns"

	"github.com/hivemind/taskworker/internal/names"
)

// srvPrefix starts the SRV names of the zone: _taskworker._tcp.<function>.<zone>
// (RFC 2782's _service._proto.name).
const srvPrefix = "_taskworker._tcp."

// zoneAnswer answers a question about a name in the network's zone:
//
//	<function>.<zone>                    A, AAAA: the addresses serving the function
//	_taskworker._tcp.<function>.<zone>   SRV: one record per address and port
//	<address>.<function>.<zone>          A, AAAA: the SRV records' targets
//
// An <address> label is an IPv4 address with dashes (10-0-0-5) or "0x" and
// the 32 hex digits of an IPv6 address; it starts with a digit, which no
// function name does, so the two never meet. It answers only while the
// address serves the function: the zone cannot be made to name an address
// the pool did not hand out.
func (r *Resolver) zoneAnswer(fqdn string, qtype uint16) (Answer, error) {
	ans := Answer{Name: fqdn, Type: qtype, TTL: r.cfg.ZoneTTL, Authoritative: true}
	if fqdn == r.zone {
		return Answer{}, fmt.Errorf("%w: %s is the zone of the network's functions; ask for <function>.%s", ErrNoRecords, display(fqdn), display(r.zone))
	}
	rel := strings.TrimSuffix(fqdn, "."+r.zone)
	switch {
	case strings.HasPrefix(rel, srvPrefix):
		fn := strings.TrimPrefix(rel, srvPrefix)
		serving, err := r.serving(fqdn, fn)
		if err != nil {
			return Answer{}, err
		}
		if qtype != dns.TypeSRV {
			return Answer{}, fmt.Errorf("%w: %s has SRV records only", ErrNoRecords, display(fqdn))
		}
		for _, ap := range serving {
			ans.Records = append(ans.Records, Record{
				Name: fqdn, Type: dns.TypeSRV, Priority: 0, Weight: 1, Port: ap.Port(),
				Target: addressLabel(ap.Addr()) + "." + fn + "." + r.zone,
			})
		}
		return ans, nil

	case rel[0] >= '0' && rel[0] <= '9':
		label, fn, _ := strings.Cut(rel, ".")
		addr, ok := parseAddressLabel(label)
		if !ok || fn == "" {
			return Answer{}, fmt.Errorf("%w: %s: a name under %s starting with a digit is an address name, such as 10-0-0-5.<function>.%s", ErrNotFound, display(fqdn), display(r.zone), display(r.zone))
		}
		serving, err := r.serving(fqdn, fn)
		if err != nil {
			return Answer{}, err
		}
		for _, ap := range serving {
			if ap.Addr() == addr {
				return r.addresses(ans, []netip.AddrPort{ap})
			}
		}
		return Answer{}, fmt.Errorf("%w: %s: %s does not serve function %q (any more)", ErrNotFound, display(fqdn), addr, fn)

	default:
		serving, err := r.serving(fqdn, rel)
		if err != nil {
			return Answer{}, err
		}
		return r.addresses(ans, serving)
	}
}

// serving returns the addresses serving fn, or ErrNotFound.
func (r *Resolver) serving(fqdn, fn string) ([]netip.AddrPort, error) {
	if err := names.Function(fn); err != nil {
		return nil, fmt.Errorf("%w: %s: %w", ErrNotFound, display(fqdn), err)
	}
	var serving []netip.AddrPort
	if r.dir != nil {
		for _, ap := range r.dir.Serving(fn) {
			if ap.Addr().IsValid() {
				serving = append(serving, netip.AddrPortFrom(ap.Addr().Unmap(), ap.Port()))
			}
		}
	}
	if len(serving) == 0 {
		return nil, fmt.Errorf("%w: %s: no worker serves function %q now (function names are matched in lower case)", ErrNotFound, display(fqdn), fn)
	}
	return serving, nil
}

// addresses answers A, AAAA or both with the distinct addresses of serving.
func (r *Resolver) addresses(ans Answer, serving []netip.AddrPort) (Answer, error) {
	seen := map[netip.Addr]bool{}
	for _, ap := range serving {
		a := ap.Addr()
		t := uint16(dns.TypeAAAA)
		if a.Is4() {
			t = dns.TypeA
		}
		if seen[a] || (ans.Type != TypeAddresses && ans.Type != t) {
			continue
		}
		seen[a] = true
		ans.Records = append(ans.Records, Record{Name: ans.Name, Type: t, Addr: a})
	}
	if len(ans.Records) == 0 {
		return Answer{}, fmt.Errorf("%w: %s has no %s records", ErrNoRecords, display(ans.Name), typeName(ans.Type))
	}
	return ans, nil
}

// addressLabel is addr as one label of an address name.
func addressLabel(addr netip.Addr) string {
	if addr.Is4() {
		return strings.ReplaceAll(addr.String(), ".", "-")
	}
	b := addr.As16()
	return "0x" + hex.EncodeToString(b[:])
}

// parseAddressLabel reverses addressLabel.
func parseAddressLabel(label string) (netip.Addr, bool) {
	if hexDigits, ok := strings.CutPrefix(label, "0x"); ok {
		if len(hexDigits) != 32 {
			return netip.Addr{}, false
		}
		var b [16]byte
		if _, err := hex.Decode(b[:], []byte(hexDigits)); err != nil {
			return netip.Addr{}, false
		}
		a := netip.AddrFrom16(b)
		return a, !a.Is4In6()
	}
	if strings.Count(label, "-") != 3 {
		return netip.Addr{}, false
	}
	a, err := netip.ParseAddr(strings.ReplaceAll(label, "-", "."))
	return a, err == nil && a.Is4()
}
