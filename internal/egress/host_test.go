package egress

import (
	"errors"
	"strings"
	"testing"
)

func TestParseURL(t *testing.T) {
	tests := []struct {
		raw     string
		target  string // "" when refused
		url     string // the normalised URL
		errPart string
	}{
		{"https://api.example.com/v1?q=1", "https://api.example.com:443", "https://api.example.com/v1?q=1", ""},
		{"HTTPS://API.Example.COM./v1", "https://api.example.com:443", "https://api.example.com/v1", ""},
		{"http://api.example.com:8080", "http://api.example.com:8080", "http://api.example.com:8080", ""},
		{"https://api.example.com:443/x#frag", "https://api.example.com:443", "https://api.example.com/x", ""},
		{"https://bücher.example/", "https://xn--bcher-kva.example:443", "https://xn--bcher-kva.example/", ""},
		{"https://xn--bcher-kva.example/", "https://xn--bcher-kva.example:443", "https://xn--bcher-kva.example/", ""},
		{"https://ＡＰＩ.example.com/", "https://api.example.com:443", "https://api.example.com/", ""},
		{"http://127.0.0.1:8080/", "http://127.0.0.1:8080", "http://127.0.0.1:8080/", ""},
		{"http://[::ffff:127.0.0.1]/", "http://[::ffff:127.0.0.1]:80", "http://[::ffff:127.0.0.1]/", ""},
		{"http://[2001:DB8::1]:81/", "http://[2001:db8::1]:81", "http://[2001:db8::1]:81/", ""},
		{"http://%31%32%37.0.0.1/", "", "", "not a URL"},
		// Odd IPv4 literals: refused, naming the address they stand for.
		{"http://2130706433/", "", "", "IPv4 address 127.0.0.1"},
		{"http://0x7f.1/", "", "", "IPv4 address 127.0.0.1"},
		{"http://017700000001/", "", "", "IPv4 address 127.0.0.1"},
		{"http://0x7f000001/", "", "", "IPv4 address 127.0.0.1"},
		{"http://127.1/", "", "", "IPv4 address 127.0.0.1"},
		{"http://127.0.0.01/", "", "", "IPv4 address 127.0.0.1"},
		{"http://0251.0376.0251.0376/", "", "", "IPv4 address 169.254.169.254"},
		{"http://169.254.43518/", "", "", "IPv4 address 169.254.169.254"},
		{"http://0/", "", "", "IPv4 address 0.0.0.0"},
		{"http://127.0.0.1.2/", "", "", "not an IPv4 address"},
		{"http://256.0.0.1/", "", "", "not an IPv4 address"},
		{"http://example.123/", "", "", "not an IPv4 address"},
		{"http://1.2.3.0x/", "", "", "unusual"},
		{"http://１２７.0.0.1/", "", "", "not an IPv4 address"},
		{"http://example.１２７/", "", "", "four decimal numbers"},
		// Other refusals.
		{"ftp://example.com/", "", "", "scheme"},
		{"file:///etc/passwd", "", "", "scheme"},
		{"https:example.com", "", "", "no host"},
		{"https:///path", "", "", "no host"},
		{"/relative", "", "", "scheme"},
		{"https://user:pw@example.com/", "", "", "user info"},
		{"https://user@example.com/", "", "", "user info"},
		{"https://example.com:0/", "", "", "port"},
		{"https://example.com:65536/", "", "", "port"},
		{"https://example.com:/", "", "", "empty port"},
		{"https://[fe80::1%25eth0]/", "", "", "zone"},
		{"https://exa_mple.com/", "", "", "not a valid host name"},
		{"https://a..b/", "", "", "not a valid host name"},
		{"https://" + strings.Repeat("a", 64) + ".com/", "", "", "not a valid host name"},
		{"http://[::1/", "", "", "not a URL"},
	}
	for _, tt := range tests {
		t.Run(tt.raw, func(t *testing.T) {
			u, target, err := ParseURL(tt.raw)
			if tt.target == "" {
				if !errors.Is(err, ErrInvalidURL) || !strings.Contains(err.Error(), tt.errPart) {
					t.Fatalf("ParseURL = %v, %v, want ErrInvalidURL saying %q", target, err, tt.errPart)
				}
				return
			}
			if err != nil {
				t.Fatal(err)
			}
			if got := target.String(); got != tt.target {
				t.Errorf("target = %s, want %s", got, tt.target)
			}
			if u.String() != tt.url {
				t.Errorf("url = %s, want %s", u, tt.url)
			}
		})
	}
}

func TestParseIPv4Loose(t *testing.T) {
	tests := []struct {
		s         string
		want      string
		canonical bool
		ok        bool
	}{
		{"1.2.3.4", "1.2.3.4", true, true},
		{"0.0.0.0", "0.0.0.0", true, true},
		{"255.255.255.255", "255.255.255.255", true, true},
		{"4294967295", "255.255.255.255", false, true},
		{"4294967296", "", false, false},
		{"1.16777215", "1.255.255.255", false, true},
		{"1.16777216", "", false, false},
		{"1.2.65535", "1.2.255.255", false, true},
		{"1.2.3.256", "", false, false},
		{"0x", "0.0.0.0", false, true},
		{"08", "", false, false},
		{"1.2.3.4.5", "", false, false},
		{"1..2", "", false, false},
		{"0x1ffffffffffffffff", "", false, false},
	}
	for _, tt := range tests {
		a, canonical, ok := parseIPv4Loose(tt.s)
		if ok != tt.ok || ok && (a.String() != tt.want || canonical != tt.canonical) {
			t.Errorf("parseIPv4Loose(%q) = %v, %v, %v; want %s, %v, %v", tt.s, a, canonical, ok, tt.want, tt.canonical, tt.ok)
		}
	}
}
