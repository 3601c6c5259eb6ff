package egress

import (
	"errors"
	"net/netip"
	"strings"
	"testing"

	"google.golang.org/grpc/codes"

	"github.com/hivemind/taskworker/internal/serving"
)

// TestPolicyRefuses checks every refused range and embedded form: refused by
// default with the range named, and allowed once the operator allows the
// network the message names.
func TestPolicyRefuses(t *testing.T) {
	tests := []struct {
		addr   string
		reason string // part of the range's name
		form   string // the embedding named, if any
	}{
		{"0.0.0.0", "unspecified", ""},
		{"0.1.2.3", "unspecified", ""},
		{"10.0.0.1", "private", ""},
		{"10.255.255.255", "private", ""},
		{"100.64.0.1", "carrier-grade NAT", ""},
		{"100.127.255.254", "carrier-grade NAT", ""},
		{"127.0.0.1", "loopback", ""},
		{"127.255.0.9", "loopback", ""},
		{"169.254.169.254", "link-local", ""},
		{"169.254.0.1", "link-local", ""},
		{"172.16.0.1", "private", ""},
		{"172.31.255.255", "private", ""},
		{"192.0.0.8", "reserved", ""},
		{"192.0.2.1", "documentation", ""},
		{"192.88.99.1", "6to4 relay", ""},
		{"192.168.1.1", "private", ""},
		{"198.18.0.1", "benchmarking", ""},
		{"198.19.255.255", "benchmarking", ""},
		{"198.51.100.7", "documentation", ""},
		{"203.0.113.9", "documentation", ""},
		{"224.0.0.1", "multicast", ""},
		{"239.255.255.250", "multicast", ""},
		{"240.0.0.1", "reserved", ""},
		{"255.255.255.255", "broadcast", ""},
		{"::", "unspecified", ""},
		{"::1", "loopback", ""},
		{"fe80::1", "link-local", ""},
		{"febf:ffff::1", "link-local", ""},
		{"fec0::1", "site-local", ""},
		{"fc00::1", "unique-local", ""},
		{"fd12:3456::1", "unique-local", ""},
		{"ff02::1", "multicast", ""},
		{"2001:db8::1", "documentation", ""},
		{"3fff::1", "documentation", ""},
		{"2001:2::1", "benchmarking", ""},
		{"2001:10::1", "ORCHID", ""},
		{"100::1", "discard", ""},
		{"5f00::1", "SRv6", ""},
		{"64:ff9b:1::a00:1", "local-use NAT64", ""},
		// IPv4 addresses in IPv6 forms.
		{"::ffff:127.0.0.1", "loopback", "IPv4-mapped"},
		{"::ffff:169.254.169.254", "link-local", "IPv4-mapped"},
		{"::ffff:10.1.2.3", "private", "IPv4-mapped"},
		{"::ffff:0.0.0.0", "unspecified", "IPv4-mapped"},
		{"::127.0.0.1", "loopback", "IPv4-compatible"},
		{"::a9fe:a9fe", "link-local", "IPv4-compatible"},
		{"::0.0.0.2", "unspecified", "IPv4-compatible"},
		{"64:ff9b::127.0.0.1", "loopback", "NAT64"},
		{"64:ff9b::a9fe:a9fe", "link-local", "NAT64"},
		{"64:ff9b::c0a8:101", "private", "NAT64"},
		{"::ffff:0:7f00:1", "loopback", "IPv4-translated"},
		{"::ffff:0:a9fe:a9fe", "link-local", "IPv4-translated"},
		{"2002:7f00:1::", "loopback", "6to4"},
		{"2002:a9fe:a9fe::1", "link-local", "6to4"},
		{"2002:ac10:1:2::3", "private", "6to4"},
		// Teredo: the client's address is inverted in the last 32 bits;
		// ^80ff:fefe is 127.0.1.1, ^5601:5601 is 169.254.169.254.
		{"2001:0:4136:e378:8000:63bf:80ff:fefe", "loopback", "Teredo"},
		{"2001:0:4136:e378::5601:5601", "link-local", "Teredo"},
	}
	var none Policy
	for _, tt := range tests {
		t.Run(tt.addr, func(t *testing.T) {
			a := netip.MustParseAddr(tt.addr)
			err := none.Check(a)
			var ae *AddressError
			if !errors.As(err, &ae) || !errors.Is(err, ErrAddressRefused) {
				t.Fatalf("Check(%s) = %v, want an *AddressError wrapping ErrAddressRefused", a, err)
			}
			if serving.GRPCCode(err) != codes.PermissionDenied {
				t.Errorf("code = %v, want PermissionDenied", serving.GRPCCode(err))
			}
			msg := err.Error()
			for _, want := range []string{a.String(), tt.reason, AllowNetFlag + " " + ae.Range.String()} {
				if !strings.Contains(msg, want) {
					t.Errorf("message %q does not name %q", msg, want)
				}
			}
			if tt.form != "" && !strings.Contains(msg, "the "+tt.form+" form of") {
				t.Errorf("message %q does not name the %s form", msg, tt.form)
			}
			// The network the message names allows it.
			p, err := NewPolicy([]netip.Prefix{ae.Range})
			if err != nil {
				t.Fatal(err)
			}
			if err := p.Check(a); err != nil {
				t.Errorf("with %s allowed: %v", ae.Range, err)
			}
			// So does the address itself.
			p, _ = NewPolicy([]netip.Prefix{netip.PrefixFrom(a, a.BitLen())})
			if err := p.Check(a); err != nil {
				t.Errorf("with %s/%d allowed: %v", a, a.BitLen(), err)
			}
			// And an allowance elsewhere does not.
			p, _ = NewPolicy([]netip.Prefix{netip.MustParsePrefix("198.51.100.0/25"), netip.MustParsePrefix("fd99::/16")})
			if p.Check(a) == nil && !ae.Range.Overlaps(netip.MustParsePrefix("198.51.100.0/25")) && !ae.Range.Overlaps(netip.MustParsePrefix("fd99::/16")) {
				t.Errorf("allowed by unrelated networks")
			}
		})
	}
}

func TestPolicyAllowsPublic(t *testing.T) {
	var none Policy
	for _, s := range []string{
		"8.8.8.8", "1.1.1.1", "93.184.215.14", "100.63.255.255", "100.128.0.0", "172.32.0.1", "169.253.255.255",
		"2606:4700:4700::1111", "2a00:1450:4001:80b::200e",
		"::ffff:8.8.8.8",                       // mapped, public
		"64:ff9b::808:808",                     // NAT64 of 8.8.8.8
		"2002:808:808::1",                      // 6to4 of 8.8.8.8
		"2001:0:4136:e378:8000:63bf:f7f7:f7f7", // Teredo of 8.8.8.8
		"::808:808",                            // IPv4-compatible of 8.8.8.8
	} {
		if err := none.Check(netip.MustParseAddr(s)); err != nil {
			t.Errorf("Check(%s) = %v, want nil", s, err)
		}
	}
}

func TestPolicyRefusesOddAddresses(t *testing.T) {
	var none Policy
	for _, a := range []netip.Addr{{}, netip.MustParseAddr("fe80::1%eth0"), netip.MustParseAddr("2606:4700::1%eth0")} {
		if err := none.Check(a); !errors.Is(err, ErrAddressRefused) {
			t.Errorf("Check(%v) = %v, want ErrAddressRefused", a, err)
		}
	}
}

func TestPolicyMappedAllowNet(t *testing.T) {
	// An allowance written in the IPv4-mapped form allows the IPv4
	// network: the kernel dials those addresses as IPv4.
	p, err := NewPolicy([]netip.Prefix{netip.MustParsePrefix("::ffff:10.1.0.0/112")})
	if err != nil {
		t.Fatal(err)
	}
	for _, s := range []string{"10.1.2.3", "::ffff:10.1.2.3"} {
		if err := p.Check(netip.MustParseAddr(s)); err != nil {
			t.Errorf("Check(%s) = %v", s, err)
		}
	}
	if err := p.Check(netip.MustParseAddr("10.2.0.1")); err == nil {
		t.Error("10.2.0.1 allowed by 10.1.0.0/16")
	}
}

func TestNewPolicyErrors(t *testing.T) {
	tests := []struct {
		net  netip.Prefix
		want string
	}{
		{netip.Prefix{}, "not valid"},
		{netip.MustParsePrefix("10.1.2.3/16"), "did you mean 10.1.0.0/16"},
	}
	for _, tt := range tests {
		_, err := NewPolicy([]netip.Prefix{tt.net})
		if !errors.Is(err, ErrInvalidNet) || !strings.Contains(err.Error(), tt.want) {
			t.Errorf("NewPolicy(%v) = %v, want ErrInvalidNet saying %q", tt.net, err, tt.want)
		}
	}
}

func TestParseNets(t *testing.T) {
	got, err := ParseNets([]string{"10.1.0.0/16", "fd00::/8", "192.168.1.7", "::1"})
	if err != nil {
		t.Fatal(err)
	}
	want := []string{"10.1.0.0/16", "fd00::/8", "192.168.1.7/32", "::1/128"}
	for i, n := range got {
		if n.String() != want[i] {
			t.Errorf("net %d = %s, want %s", i, n, want[i])
		}
	}
	for _, bad := range []string{"", "10.1.0.0/33", "example.com", "10.1/16"} {
		if _, err := ParseNets([]string{bad}); !errors.Is(err, ErrInvalidNet) {
			t.Errorf("ParseNets(%q) = %v, want ErrInvalidNet", bad, err)
		}
	}
}
