package egress_test

import (
	"errors"
	"fmt"
	"net/netip"

	"github.com/hivemind/taskworker/internal/egress"
)

// A function deployed with --allow-host rules may reach those hosts only.
func ExampleAllowlist() {
	a, _ := egress.ParseAllowlist([]string{"https://api.example.com", "https://*.cdn.example.net"})
	for _, u := range []string{
		"https://API.example.com./v1/items",
		"https://img.cdn.example.net/a.png",
		"https://a.b.cdn.example.net/",
		"http://api.example.com/",
	} {
		r, err := a.Match(u)
		if errors.Is(err, egress.ErrHostNotAllowed) {
			fmt.Println(u, "-> refused")
			continue
		}
		fmt.Println(u, "->", r)
	}
	// Output:
	// https://API.example.com./v1/items -> https://api.example.com
	// https://img.cdn.example.net/a.png -> https://*.cdn.example.net
	// https://a.b.cdn.example.net/ -> refused
	// http://api.example.com/ -> refused
}

// Addresses are checked after resolving, IPv6 forms by the IPv4 address they
// carry; the operator may allow a network.
func ExamplePolicy() {
	var p egress.Policy
	for _, s := range []string{"169.254.169.254", "64:ff9b::a9fe:a9fe", "93.184.215.14"} {
		fmt.Println(p.Check(netip.MustParseAddr(s)))
	}
	allowed, _ := egress.NewPolicy([]netip.Prefix{netip.MustParsePrefix("10.20.0.0/16")})
	fmt.Println(allowed.Check(netip.MustParseAddr("10.20.1.2")))
	// Output:
	// 169.254.169.254 is link-local (where cloud metadata services answer), in 169.254.0.0/16: outbound requests may not reach it; the pool's operator may allow that network with --egress-allow-net 169.254.0.0/16
	// 64:ff9b::a9fe:a9fe (the NAT64 form of 169.254.169.254) is link-local (where cloud metadata services answer), in 169.254.0.0/16: outbound requests may not reach it; the pool's operator may allow that network with --egress-allow-net 169.254.0.0/16
	// <nil>
	// <nil>
}
