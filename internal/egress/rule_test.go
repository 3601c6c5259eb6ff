package egress

import (
	"errors"
	"strings"
	"testing"

	"google.golang.org/grpc/codes"

	"github.com/hivemind/taskworker/internal/serving"
)

func TestParseRule(t *testing.T) {
	tests := []struct {
		in      string
		want    string // canonical form; "" when refused
		errPart string
	}{
		{"https://api.example.com", "https://api.example.com", ""},
		{"https://api.example.com/", "https://api.example.com", ""},
		{"HTTPS://API.Example.com.", "https://api.example.com", ""},
		{"https://api.example.com:443", "https://api.example.com", ""},
		{"https://api.example.com:8443", "https://api.example.com:8443", ""},
		{"http://host:8080", "http://host:8080", ""},
		{"http://host", "http://host", ""},
		{"https://*.example.com", "https://*.example.com", ""},
		{"https://*.bücher.example", "https://*.xn--bcher-kva.example", ""},
		{"http://127.0.0.1:9000", "http://127.0.0.1:9000", ""},
		{"https://[2001:db8::1]", "https://[2001:db8::1]", ""},
		{"https://[2001:db8::1]:8443", "https://[2001:db8::1]:8443", ""},
		{"api.example.com", "", "with a scheme"},
		{"//api.example.com", "", "with a scheme"},
		{"://api.example.com", "", "scheme must be"},
		{"ftp://api.example.com", "", "scheme must be"},
		{"https://", "", "host is missing"},
		{"https://:443", "", "host is missing"},
		{"https://api.example.com/v1", "", "not a path"},
		{"https://api.example.com?x=1", "", "not a path"},
		{"https://user@api.example.com", "", "user info"},
		{"https://*", "", "whole leftmost label"},
		{"https://*.com", "", "at least two labels"},
		{"https://*example.com", "", "whole leftmost label"},
		{"https://a.*.example.com", "", "whole leftmost label"},
		{"https://api.*", "", "whole leftmost label"},
		{"https://**.example.com", "", "whole leftmost label"},
		{"https://*.*.example.com", "", "whole leftmost label"},
		{"https://*.10.0.0.1", "", "part of an IP address"},
		{"https://api.example.com:0", "", "port"},
		{"https://api.example.com:http", "", "port"},
		{"https://api.example.com:", "", "port"},
		{"https://[2001:db8::1", "", "closing"},
		{"https://[2001:db8::1]x", "", "only a port"},
		{"https://[10.0.0.1]", "", "only IPv6"},
		{"https://2001:db8::1", "", "in brackets"},
		{"http://2130706433", "", "127.0.0.1"},
		{"http://0x7f.1", "", "127.0.0.1"},
		{"https://exa mple.com", "", "not a valid host name"},
	}
	for _, tt := range tests {
		t.Run(tt.in, func(t *testing.T) {
			r, err := ParseRule(tt.in)
			if tt.want == "" {
				if !errors.Is(err, ErrInvalidRule) || !strings.Contains(err.Error(), tt.errPart) || !strings.Contains(err.Error(), tt.in) {
					t.Fatalf("ParseRule = %v, %v; want ErrInvalidRule quoting the rule and saying %q", r, err, tt.errPart)
				}
				if serving.GRPCCode(err) != codes.InvalidArgument {
					t.Errorf("code = %v", serving.GRPCCode(err))
				}
				return
			}
			if err != nil {
				t.Fatal(err)
			}
			if r.String() != tt.want {
				t.Errorf("rule = %s, want %s", r, tt.want)
			}
			again, err := ParseRule(r.String())
			if err != nil || again != r {
				t.Errorf("ParseRule(%s) = %v, %v; want it back", r, again, err)
			}
		})
	}
}

func TestAllowlistMatch(t *testing.T) {
	a, err := ParseAllowlist([]string{
		"https://api.example.com",
		"https://*.cdn.example.net",
		"http://plain.example.org:8080",
		"https://bücher.example",
		"http://127.0.0.1:9000",
		"https://[2001:db8::1]",
	})
	if err != nil {
		t.Fatal(err)
	}
	tests := []struct {
		url  string
		rule string // "" when refused
	}{
		{"https://api.example.com/v1/x?y=1", "https://api.example.com"},
		{"https://API.EXAMPLE.COM./", "https://api.example.com"},
		{"https://api.example.com:443/", "https://api.example.com"},
		{"http://api.example.com/", ""},           // scheme
		{"https://api.example.com:8443/", ""},     // port
		{"https://example.com/", ""},              // parent
		{"https://x.api.example.com/", ""},        // child
		{"https://api.example.com.evil.net/", ""}, // suffix trick
		{"https://evilapi.example.com/", ""},      // prefix trick
		{"https://img.cdn.example.net/a.png", "https://*.cdn.example.net"},
		{"https://IMG.cdn.example.net./", "https://*.cdn.example.net"},
		{"https://cdn.example.net/", ""},     // the wildcard needs a label
		{"https://a.b.cdn.example.net/", ""}, // exactly one label
		{"https://xcdn.example.net/", ""},    // not a label boundary
		{"http://plain.example.org:8080/", "http://plain.example.org:8080"},
		{"http://plain.example.org/", ""},
		{"https://xn--bcher-kva.example/", "https://xn--bcher-kva.example"},
		{"https://BÜCHER.example/", "https://xn--bcher-kva.example"},
		{"http://127.0.0.1:9000/", "http://127.0.0.1:9000"},
		{"http://[::ffff:127.0.0.1]:9000/", ""}, // another spelling is another host
		{"http://2130706433:9000/", ""},
		{"https://[2001:DB8:0::1]/", "https://[2001:db8::1]"},
		{"https://user@api.example.com/", ""},
	}
	for _, tt := range tests {
		t.Run(tt.url, func(t *testing.T) {
			r, err := a.Match(tt.url)
			if tt.rule == "" {
				if err == nil {
					t.Fatalf("Match = %s, want refused", r)
				}
				if !errors.Is(err, ErrHostNotAllowed) && !errors.Is(err, ErrInvalidURL) {
					t.Fatalf("Match = %v, want ErrHostNotAllowed or ErrInvalidURL", err)
				}
				return
			}
			if err != nil {
				t.Fatal(err)
			}
			if r.String() != tt.rule {
				t.Errorf("rule = %s, want %s", r, tt.rule)
			}
		})
	}
}

func TestAllowlistMessages(t *testing.T) {
	a, _ := ParseAllowlist([]string{"https://api.example.com"})
	_, err := a.Match("https://evil.example.com/steal")
	if !errors.Is(err, ErrHostNotAllowed) || serving.GRPCCode(err) != codes.PermissionDenied {
		t.Fatalf("err = %v", err)
	}
	for _, want := range []string{"https://evil.example.com:443", "--allow-host", "https://api.example.com"} {
		if !strings.Contains(err.Error(), want) {
			t.Errorf("%q does not say %q", err, want)
		}
	}
	var empty *Allowlist
	_, err = empty.Match("https://api.example.com/")
	if !errors.Is(err, ErrHostNotAllowed) || !strings.Contains(err.Error(), "--allow-host https://api.example.com") {
		t.Errorf("empty allowlist: %v", err)
	}
}
