package dnsproxy

import (
	"errors"
	"net/netip"
	"slices"
	"strings"
	"testing"

	"github.com/miekg/dns"

	"github.com/hivemind/taskworker/internal/egress"
)

// The resolver can be the egress client's.
var _ egress.Resolver = (*Resolver)(nil)

// Public addresses: the egress policy refuses the documentation ranges the
// other tests use.
var egressZone = []string{
	"public.example. 300 IN A 198.51.99.1",
	"public.example. 300 IN AAAA 2a00:1450::1",
	"metadata.example. 300 IN A 169.254.169.254",
	"mapped.example. 300 IN AAAA ::ffff:127.0.0.1",
	"nat64.example. 300 IN AAAA 64:ff9b::a9fe:a9fe",
	"cgnat.example. 300 IN A 100.64.0.1",
	"mixed.example. 300 IN A 198.51.99.2",
	"mixed.example. 300 IN A 10.0.0.2",
}

// TestWithTheEgressPolicy wires the resolver as the pool does: the egress
// package's address policy decides which answers are refused.
func TestWithTheEgressPolicy(t *testing.T) {
	up := newUpstreamServer(t, egressZone...)
	policy, err := egress.NewPolicy(nil)
	if err != nil {
		t.Fatal(err)
	}
	r, err := New(testConfig(up, nil), policy.Check, nil, testDirectory)
	if err != nil {
		t.Fatal(err)
	}
	for _, tc := range []struct {
		name  string
		qtype uint16
		says  string
	}{
		{"metadata.example", dns.TypeA, "169.254.169.254 is link-local"},
		{"mapped.example", dns.TypeAAAA, "IPv4-mapped form of 127.0.0.1"},
		{"nat64.example", dns.TypeAAAA, "NAT64 form of 169.254.169.254"},
		{"cgnat.example", TypeAddresses, "100.64.0.1"},
	} {
		t.Run(tc.name, func(t *testing.T) {
			_, err := r.Resolve(t.Context(), "alice", tc.name, tc.qtype)
			if !errors.Is(err, ErrAllAddressesRefused) || !errors.Is(err, egress.ErrAddressRefused) || !strings.Contains(err.Error(), tc.says) {
				t.Errorf("error %v, want the egress policy's refusal saying %q", err, tc.says)
			}
		})
	}
	ans, err := r.Resolve(t.Context(), "alice", "public.example", TypeAddresses)
	if err != nil || !slices.Equal(values(ans), []string{"198.51.99.1", "2a00:1450::1"}) {
		t.Errorf("public name: %q, %v", values(ans), err)
	}
	// ResolveDomain leaves the private address out of a mixed answer...
	ans, err = r.Resolve(t.Context(), "alice", "mixed.example", TypeAddresses)
	if err != nil || !slices.Equal(values(ans), []string{"198.51.99.2"}) {
		t.Errorf("mixed name through Resolve: %q, %v", values(ans), err)
	}
	// ...while the egress client gets the whole answer, and refuses the
	// name whole when any address is refused.
	addrs, err := r.LookupNetIP(t.Context(), "ip", "mixed.example")
	slices.SortFunc(addrs, netip.Addr.Compare)
	if err != nil || !slices.Equal(addrs, []netip.Addr{netip.MustParseAddr("10.0.0.2"), netip.MustParseAddr("198.51.99.2")}) {
		t.Errorf("mixed name through LookupNetIP: %v, %v", addrs, err)
	}
}

func TestLookupNetIP(t *testing.T) {
	up := newUpstreamServer(t, testZone...)
	r := newTestResolver(t, testConfig(up, nil), func(string, string) error { return errors.New("no names for people") }, testDirectory)
	for _, tc := range []struct {
		network, host string
		want          []string
		err           error
	}{
		{"ip", "www.example", []string{"192.0.2.10", "2001:db8::10"}, nil},
		{"ip4", "alias2.example", []string{"192.0.2.10"}, nil},
		{"ip6", "www.example", []string{"2001:db8::10"}, nil},
		{"ip", "private.example", []string{"10.0.0.1"}, nil}, // the egress client judges
		{"ip", "add.fn.taskworker.internal", []string{"10.1.0.5", "127.0.0.1", "fd00::5"}, nil},
		{"ip", "nosuch.example", nil, ErrNotFound},
		{"ip6", "v4only.example", nil, ErrNoRecords},
		{"tcp", "www.example", nil, ErrInvalidType},
		{"ip", "127.0.0.1", nil, ErrInvalidName},
	} {
		t.Run(tc.network+"/"+tc.host, func(t *testing.T) {
			addrs, err := r.LookupNetIP(t.Context(), tc.network, tc.host)
			if !errors.Is(err, tc.err) {
				t.Fatalf("error %v, want %v", err, tc.err)
			}
			var got []string
			for _, a := range addrs {
				got = append(got, a.String())
			}
			slices.Sort(got)
			if !slices.Equal(got, tc.want) {
				t.Errorf("addresses %q, want %q", got, tc.want)
			}
		})
	}
}
