package egress

import (
	"context"
	"fmt"
	"net/http"
	"net/url"
	"strings"
	"testing"
)

// Seeds are in testdata/fuzz; `go test` runs them only. Fuzz with, say,
// go test -run=^$ -fuzz=FuzzMatch -fuzztime=1m ./internal/egress

func FuzzParseRule(f *testing.F) {
	for _, s := range []string{"https://api.example.com", "https://*.example.com", "http://host:8080", "https://[::1]:1"} {
		f.Add(s)
	}
	f.Fuzz(func(t *testing.T, s string) {
		r, err := ParseRule(s)
		if err != nil {
			return
		}
		again, err := ParseRule(r.String())
		if err != nil || again != r {
			t.Fatalf("ParseRule(%q) = %v; its String %q reads back as %v, %v", s, r, r.String(), again, err)
		}
		if r.Host != strings.ToLower(r.Host) || strings.HasSuffix(r.Host, ".") || strings.Count(r.Host, "*") > 1 {
			t.Fatalf("rule host %q is not normalised", r.Host)
		}
		if r.Port == 0 {
			t.Fatalf("rule %q has no port", r)
		}
	})
}

func FuzzMatch(f *testing.F) {
	f.Add("https://*.example.com", "https://api.example.com/x")
	f.Add("http://127.0.0.1:80", "http://2130706433/")
	f.Add("https://bücher.example", "https://xn--bcher-kva.example./")
	f.Fuzz(func(t *testing.T, rule, raw string) {
		u, target, err := ParseURL(raw)
		if err != nil {
			return
		}
		// A name is never something a resolver would read as an address.
		if !target.Addr.IsValid() {
			if _, _, ok := parseIPv4Loose(target.Host); ok || strings.Contains(target.Host, ":") {
				t.Fatalf("host %q of %q passed as a name", target.Host, raw)
			}
		}
		// The normalised URL parses to the same target.
		if _, t2, err := ParseURL(u.String()); err != nil || t2 != target {
			t.Fatalf("%q normalised to %q: %v, %v; want %v", raw, u, t2, err, target)
		}
		r, err := ParseRule(rule)
		if err != nil {
			return
		}
		if !r.Matches(target) {
			return
		}
		if r.Scheme != target.Scheme || r.Port != target.Port {
			t.Fatalf("%s matches %s", r, target)
		}
		if suffix, ok := strings.CutPrefix(r.Host, "*."); ok {
			label, rest, _ := strings.Cut(target.Host, ".")
			if rest != suffix || label == "" || strings.Contains(label, ".") {
				t.Fatalf("%s matches %s", r, target)
			}
		} else if r.Host != target.Host {
			t.Fatalf("%s matches %s", r, target)
		}
	})
}

func FuzzInject(f *testing.F) {
	f.Add("Bearer {{secret:KEY}}", "k={{secret:KEY}}", true)
	f.Add("{{secret:KEY}}{{secret:KEY", "a=%7B%7Bsecret:KEY%7D%7D", false)
	f.Add("{{secret:{{secret:KEY}}}}", "{{secret:KEY}}=1", true)
	const value = "S3CR3T-VALUE"
	f.Fuzz(func(t *testing.T, header, query string, granted bool) {
		u, err := url.Parse("https://api.example.com/p?" + query)
		if err != nil {
			return
		}
		_, target, err := ParseURL(u.String())
		if err != nil {
			return
		}
		grant := "https://other.example.com"
		if granted {
			grant = "https://api.example.com"
		}
		g, _ := ParseAllowlist([]string{grant})
		secrets := SecretsFunc(func(_ context.Context, name string) ([]byte, error) {
			if name != "KEY" {
				return nil, fmt.Errorf("no secret %s", name)
			}
			return []byte(value), nil
		})
		req := &http.Request{Method: "GET", URL: u, Header: http.Header{"X-Key": {header}}}
		out, used, err := Inject(context.Background(), req, target, true, Grants{"KEY": g}, secrets)
		if err != nil {
			if strings.Contains(err.Error(), value) {
				t.Fatalf("error holds the value: %v", err)
			}
			return
		}
		sent := out.URL.String() + " " + strings.Join(out.Header["X-Key"], "|")
		if !granted && strings.Contains(sent, value) {
			t.Fatalf("the value went to an ungranted host: %s", sent)
		}
		if strings.Contains(header+query, value) {
			return // the function wrote the value itself
		}
		if strings.Contains(sent, value) != (len(used) > 0) {
			t.Fatalf("used %v, sent %q", used, sent)
		}
		if req.Header.Get("X-Key") != header || strings.Contains(req.URL.String(), value) {
			t.Fatalf("Inject changed the caller's request")
		}
	})
}
