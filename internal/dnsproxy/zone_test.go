package dnsproxy

import (
	"errors"
	"net/netip"
	"slices"
	"strings"
	"testing"

	"github.com/miekg/dns"
)

// testDirectory: "add" served at two IPv4 addresses (one twice, on two
// ports) and one IPv6 address; "Upper.Case" and "reports.daily" too.
var testDirectory = fakeDirectory{
	"add": {
		netip.MustParseAddrPort("10.1.0.5:50052"),
		netip.MustParseAddrPort("10.1.0.5:50053"),
		netip.MustParseAddrPort("127.0.0.1:50054"),
		netip.MustParseAddrPort("[fd00::5]:50055"),
	},
	"reports.daily": {netip.MustParseAddrPort("[::ffff:10.1.0.7]:50056")},
	"Upper":         {netip.MustParseAddrPort("10.1.0.8:50057")},
}

func TestZone(t *testing.T) {
	up := newUpstreamServer(t)
	r := newTestResolver(t, testConfig(up, nil), func(string, string) error { return errors.New("nothing outside the zone") }, testDirectory)
	for _, tc := range []struct {
		name  string
		qtype uint16
		want  []string
		err   error
	}{
		// The pool's addresses are private, and the zone hands them out all
		// the same: the policy is for addresses outside the network.
		{"add.fn.taskworker.internal", dns.TypeA, []string{"10.1.0.5", "127.0.0.1"}, nil},
		{"ADD.fn.taskworker.internal.", dns.TypeAAAA, []string{"fd00::5"}, nil},
		{"add.fn.taskworker.internal", TypeAddresses, []string{"10.1.0.5", "127.0.0.1", "fd00::5"}, nil},
		{"reports.daily.fn.taskworker.internal", dns.TypeA, []string{"10.1.0.7"}, nil},
		{"_taskworker._tcp.add.fn.taskworker.internal", dns.TypeSRV, []string{
			"0 1 50052 10-1-0-5.add.fn.taskworker.internal",
			"0 1 50053 10-1-0-5.add.fn.taskworker.internal",
			"0 1 50054 127-0-0-1.add.fn.taskworker.internal",
			"0 1 50055 0xfd000000000000000000000000000005.add.fn.taskworker.internal",
		}, nil},
		{"_taskworker._tcp.reports.daily.fn.taskworker.internal", dns.TypeSRV, []string{"0 1 50056 10-1-0-7.reports.daily.fn.taskworker.internal"}, nil},
		{"10-1-0-5.add.fn.taskworker.internal", dns.TypeA, []string{"10.1.0.5"}, nil},
		{"0xfd000000000000000000000000000005.add.fn.taskworker.internal", dns.TypeAAAA, []string{"fd00::5"}, nil},
		{"10-1-0-7.reports.daily.fn.taskworker.internal", TypeAddresses, []string{"10.1.0.7"}, nil},

		{"sub.fn.taskworker.internal", dns.TypeA, nil, ErrNotFound},
		{"upper.fn.taskworker.internal", dns.TypeA, nil, ErrNotFound}, // matched in lower case
		{"reports.daily.fn.taskworker.internal", dns.TypeAAAA, nil, ErrNoRecords},
		{"add.fn.taskworker.internal", dns.TypeTXT, nil, ErrNoRecords},
		{"_taskworker._tcp.add.fn.taskworker.internal", dns.TypeA, nil, ErrNoRecords},
		{"_taskworker._tcp.sub.fn.taskworker.internal", dns.TypeSRV, nil, ErrNotFound},
		{"fn.taskworker.internal", dns.TypeA, nil, ErrNoRecords},
		// An address name answers only for an address serving the function:
		// the zone cannot be made to name an address of the asker's choice.
		{"169-254-169-254.add.fn.taskworker.internal", dns.TypeA, nil, ErrNotFound},
		{"10-1-0-7.add.fn.taskworker.internal", dns.TypeA, nil, ErrNotFound},
		{"10-1-0-5.fn.taskworker.internal", dns.TypeA, nil, ErrNotFound},
		{"0x0a010005.add.fn.taskworker.internal", dns.TypeA, nil, ErrNotFound},
		{"0x00000000000000000000ffff0a010005.add.fn.taskworker.internal", dns.TypeA, nil, ErrNotFound},
		{"1-2-3.add.fn.taskworker.internal", dns.TypeA, nil, ErrNotFound},
	} {
		t.Run(tc.name+"/"+typeName(tc.qtype), func(t *testing.T) {
			ans, err := r.Resolve(t.Context(), "mallory", tc.name, tc.qtype)
			if !errors.Is(err, tc.err) {
				t.Fatalf("error %v, want %v", err, tc.err)
			}
			if err != nil {
				return
			}
			if got := values(ans); !slices.Equal(got, tc.want) {
				t.Errorf("records %q, want %q", got, tc.want)
			}
			if !ans.Authoritative || ans.TTL != DefaultConfig().ZoneTTL {
				t.Errorf("authoritative %v TTL %s, want true and the zone's TTL", ans.Authoritative, ans.TTL)
			}
		})
	}
	if n := up.totalQueries(); n != 0 {
		t.Errorf("the zone's names reached the upstream %d times", n)
	}
}

func TestZoneIsConfigurable(t *testing.T) {
	up := newUpstreamServer(t, "add.fn.taskworker.internal. 300 IN A 192.0.2.99")
	cfg := testConfig(up, nil)
	cfg.Zone = "Services.Example.Net."
	r := newTestResolver(t, cfg, nil, testDirectory)
	ans, err := r.Resolve(t.Context(), "", "add.services.example.net", dns.TypeA)
	if err != nil {
		t.Fatal(err)
	}
	if got := values(ans); !slices.Equal(got, []string{"10.1.0.5", "127.0.0.1"}) {
		t.Errorf("records %q", got)
	}
	// The default zone is now an ordinary name, asked upstream.
	ans, err = r.Resolve(t.Context(), "", "add.fn.taskworker.internal", dns.TypeA)
	if err != nil || !slices.Equal(values(ans), []string{"192.0.2.99"}) {
		t.Errorf("default zone name: %q, %v; want the upstream's answer", values(ans), err)
	}
}

func TestAddressLabelsRoundTrip(t *testing.T) {
	for _, s := range []string{"10.0.0.5", "0.0.0.0", "255.255.255.255", "::1", "fd00::5", "2001:db8::ffff:1", "::"} {
		a := netip.MustParseAddr(s)
		label := addressLabel(a)
		if label[0] < '0' || label[0] > '9' {
			t.Errorf("%s: label %q does not start with a digit", s, label)
		}
		if _, err := Normalize(label + ".x"); err != nil {
			t.Errorf("%s: label %q is not a DNS label: %v", s, label, err)
		}
		back, ok := parseAddressLabel(label)
		if !ok || back != a {
			t.Errorf("%s -> %q -> %s, %v", s, label, back, ok)
		}
	}
	for _, bad := range []string{"1-2-3", "1-2-3-4-5", "256-0-0-1", "0x12", "0xzz000000000000000000000000000000", "01-2-3-4"} {
		if a, ok := parseAddressLabel(bad); ok {
			t.Errorf("%q parsed as %s", bad, a)
		}
	}
	if strings.Contains(addressLabel(netip.MustParseAddr("10.0.0.5")), ".") {
		t.Error("an IPv4 label has dots")
	}
}
