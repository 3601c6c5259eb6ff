package dnsproxy

import (
	"errors"
	"strings"
	"testing"

	"github.com/miekg/dns"
)

func TestNormalize(t *testing.T) {
	long63 := strings.Repeat("a", 63)
	for _, tc := range []struct {
		in, want string
		err      string
	}{
		{"example.com", "example.com.", ""},
		{"Example.COM.", "example.com.", ""},
		{"_dmarc.example.com", "_dmarc.example.com.", ""},
		{"xn--bcher-kva.example", "xn--bcher-kva.example.", ""},
		{"localhost", "localhost.", ""},
		{long63 + ".com", long63 + ".com.", ""},
		{"", "", "empty"},
		{".", "", "empty"},
		{"..", "", "empty label"},
		{".example.com", "", "empty label"},
		{"example..com", "", "empty label"},
		{"example.com..", "", "empty label"},
		{strings.Repeat("a", 64) + ".com", "", "longer than 63"},
		{strings.Repeat("abc.", 64) + "com", "", "a name has at most 253"},
		{"exa mple.com", "", "use letters"},
		{`a\.b.com`, "", "use letters"},
		{"bücher.example", "", "xn--"},
		{"a/b.com", "", "use letters"},
		{"127.0.0.1", "", "IP address"},
		{"::1", "", "IP address"},
		{"[::1]", "", "IP address"},
		{"2130706433", "2130706433.", ""}, // a name, to DNS; egress refuses it as an address
	} {
		got, err := Normalize(tc.in)
		if tc.err != "" {
			if !errors.Is(err, ErrInvalidName) || !strings.Contains(err.Error(), tc.err) {
				t.Errorf("Normalize(%q) = %q, %v; want an error saying %q", tc.in, got, err, tc.err)
			}
			continue
		}
		if err != nil || got != tc.want {
			t.Errorf("Normalize(%q) = %q, %v; want %q", tc.in, got, err, tc.want)
		}
	}
}

func FuzzNormalize(f *testing.F) {
	for _, seed := range []string{
		"example.com", "Example.COM.", "_taskworker._tcp.add.fn.taskworker.internal", "..", "",
		"a\\.b", "10.0.0.1", "::ffff:127.0.0.1", "xn--bcher-kva.example", strings.Repeat("a.", 127),
		"0x7f.1", "add.fn.taskworker.internal.", "\x00.com", "é.com",
	} {
		f.Add(seed)
	}
	f.Fuzz(func(t *testing.T, in string) {
		out, err := Normalize(in)
		if err != nil {
			if !errors.Is(err, ErrInvalidName) {
				t.Fatalf("Normalize(%q): error %v does not wrap ErrInvalidName", in, err)
			}
			return
		}
		if again, err := Normalize(out); err != nil || again != out {
			t.Fatalf("Normalize is not idempotent: %q -> %q -> %q, %v", in, out, again, err)
		}
		if out != strings.ToLower(out) || !strings.HasSuffix(out, ".") || len(out) > maxNameLength+1 {
			t.Fatalf("Normalize(%q) = %q: not lower case, fully qualified and short enough", in, out)
		}
		if _, ok := dns.IsDomainName(out); !ok {
			t.Fatalf("Normalize(%q) = %q, which DNS does not take as a name", in, out)
		}
		if !strings.EqualFold(strings.TrimSuffix(in, "."), strings.TrimSuffix(out, ".")) {
			t.Fatalf("Normalize(%q) = %q changed more than the case", in, out)
		}
		// The wire form round-trips to the same name.
		m := new(dns.Msg)
		m.SetQuestion(out, dns.TypeA)
		wire, err := m.Pack()
		if err != nil {
			t.Fatalf("%q does not pack: %v", out, err)
		}
		var back dns.Msg
		if err := back.Unpack(wire); err != nil || back.Question[0].Name != out {
			t.Fatalf("%q unpacked as %q, %v", out, back.Question[0].Name, err)
		}
	})
}

func TestParseType(t *testing.T) {
	for _, tc := range []struct {
		in   string
		want uint16
		ok   bool
	}{
		{"", TypeAddresses, true},
		{"A", dns.TypeA, true},
		{"aaaa", dns.TypeAAAA, true},
		{"Cname", dns.TypeCNAME, true},
		{"TXT", dns.TypeTXT, true},
		{"srv", dns.TypeSRV, true},
		{"MX", 0, false},
		{"ANY", 0, false},
		{"TYPE1", 0, false},
		{strings.Repeat("A", 100), 0, false},
	} {
		got, err := ParseType(tc.in)
		if (err == nil) != tc.ok || (tc.ok && got != tc.want) {
			t.Errorf("ParseType(%q) = %d, %v", tc.in, got, err)
		}
		if err != nil && (!errors.Is(err, ErrInvalidType) || len(err.Error()) > 120) {
			t.Errorf("ParseType(%q): error %q", tc.in, err)
		}
	}
}

func FuzzZoneNames(f *testing.F) {
	for _, seed := range []string{
		"add", "_taskworker._tcp.add", "10-1-0-5.add", "0xfd000000000000000000000000000005.add",
		"1-2-3.add", "0x", "_taskworker._tcp.", "reports.daily", "9", "0x0a010005.add",
	} {
		f.Add(seed)
	}
	r, err := New(DefaultConfig(), testPolicy, nil, testDirectory)
	if err != nil {
		f.Fatal(err)
	}
	served := map[string]bool{}
	for _, aps := range testDirectory {
		for _, ap := range aps {
			served[ap.Addr().Unmap().String()] = true
		}
	}
	f.Fuzz(func(t *testing.T, rel string) {
		for _, qtype := range []uint16{TypeAddresses, dns.TypeSRV} {
			ans, err := r.Resolve(t.Context(), "", rel+".fn.taskworker.internal", qtype)
			if err != nil {
				continue
			}
			// Whatever is asked, the zone names only addresses the directory serves.
			for _, rec := range ans.Records {
				if rec.Addr.IsValid() && !served[rec.Addr.String()] {
					t.Fatalf("%q answered %s, which no function is served at", rel, rec.Addr)
				}
			}
		}
	})
}
