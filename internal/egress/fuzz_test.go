package egress

import (
	"context"
	"crypto/sha256"
	"errors"
	"fmt"
	"io"
	"net"
	"net/http"
	"net/netip"
	"net/url"
	"strconv"
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

// dialRecorder is a transport's dialer that records the address it is
// asked for and connects nowhere.
type dialRecorder struct{ addr chan string }

func (d dialRecorder) dial(_ context.Context, _, addr string) (net.Conn, error) {
	d.addr <- addr
	return nil, errors.New("no connection in a fuzz test")
}

// FuzzParseURL: the address net/http dials for a URL ParseURL accepted (and
// normalised) is exactly the target that the allowlist and the address
// policy check, and it reads back the same.
func FuzzParseURL(f *testing.F) {
	for _, s := range []string{
		"https://api.example.com/x?y=1#f", "http://127.0.0.1:8080/", "https://[::1]:1/", "HTTP://Bücher.Example./",
		"http://2130706433/", "https://a@b.example/", "http://[fe80::1%25eth0]/", "https://example.com:0/",
		"http://example.com:/", "https://xn--bcher-kva.example:443/p", "http://a.b/%2e%2e/",
	} {
		f.Add(s)
	}
	d := dialRecorder{addr: make(chan string, 1)}
	tr := &http.Transport{DialContext: d.dial, DialTLSContext: d.dial, DisableKeepAlives: true, Proxy: nil}
	f.Fuzz(func(t *testing.T, raw string) {
		u, target, err := ParseURL(raw)
		if err != nil {
			if !errors.Is(err, ErrInvalidURL) {
				t.Fatalf("ParseURL(%q): %v does not wrap ErrInvalidURL", raw, err)
			}
			return
		}
		if u.User != nil || u.Fragment != "" || (target.Scheme != "http" && target.Scheme != "https") || target.Port == 0 {
			t.Fatalf("ParseURL(%q) = %q, %v", raw, u, target)
		}
		if a, err := netip.ParseAddr(target.Host); (err == nil) != target.Addr.IsValid() || err == nil && a != target.Addr {
			t.Fatalf("ParseURL(%q): host %q, address %v", raw, target.Host, target.Addr)
		}
		if _, t2, err := ParseURL(u.String()); err != nil || t2 != target {
			t.Fatalf("%q normalised to %q, which reads back as %v, %v; want %v", raw, u, t2, err, target)
		}
		req, err := http.NewRequest("GET", u.String(), nil)
		if err != nil {
			t.Fatalf("%q normalised to %q, which net/http refuses: %v", raw, u, err)
		}
		if _, err := tr.RoundTrip(req); err == nil {
			t.Fatalf("%q: a round trip without a connection", u)
		}
		select {
		case addr := <-d.addr:
			if want := joinHostPort(target.Host, target.Port); addr != want {
				t.Fatalf("%q (from %q): net/http dials %q, the checks saw %q", u, raw, addr, want)
			}
		default:
			t.Fatalf("%q (from %q): net/http dialed nothing", u, raw)
		}
	})
}

// FuzzTemplate: the names templateNames finds are exactly the templates
// expand replaces, each once, and no template is left in what goes out.
func FuzzTemplate(f *testing.F) {
	for _, s := range []string{
		"Bearer {{secret:KEY}}", "{{secret:A}}{{secret:B}}", "{{sec{{secret:A}}ret:B}}", "{{secret:A", "}}{{secret:A}}{{",
		"{{secret:{{secret:A}}}}", "x{{secret:}}y", "{{secret:a-b_c.d}}",
	} {
		f.Add(s)
	}
	const mark = "\x01"
	f.Fuzz(func(t *testing.T, s string) {
		names, err := templateNames(s)
		if err != nil {
			if !errors.Is(err, ErrTemplate) {
				t.Fatalf("templateNames(%q): %v does not wrap ErrTemplate", s, err)
			}
			return
		}
		if strings.Contains(s, mark) {
			return
		}
		values := map[string][]byte{}
		for _, n := range names {
			values[n] = []byte(mark)
		}
		out := expand(s, values)
		if got := strings.Count(out, mark); got != len(names) {
			t.Fatalf("expand(%q) = %q: %d values put in for %d templates %v", s, out, got, len(names), names)
		}
		if strings.Contains(out, templateOpen) {
			t.Fatalf("expand(%q) = %q leaves a template", s, out)
		}
		if len(names) == 0 && out != s {
			t.Fatalf("expand(%q) = %q without a template", s, out)
		}
	})
}

// FuzzRedactResponse: after Response, a value injected in the call is
// nowhere in what the function gets but inside marks, Content-Length is the
// body's, and a response that echoed the value is the same, to the byte,
// whatever the value's length.
func FuzzRedactResponse(f *testing.F) {
	f.Add("you sent ", "sk-live-0123456789", ", thanks", "Bearer ")
	f.Add("", "a", "", "")
	f.Add("aa", "aa", "aa", "aa")
	f.Add("[redact", "ed:K", "EY]", "d:K")
	f.Fuzz(func(t *testing.T, prefix, value, suffix, echoPrefix string) {
		if value == "" || strings.Contains(prefix+value+suffix+echoPrefix, "\x00") {
			return
		}
		respond := func(v string) (*http.Response, []byte) {
			body := []byte(prefix + v + suffix)
			h := http.Header{}
			h.Set("Content-Length", strconv.Itoa(len(body)))
			h.Set("Etag", fmt.Sprintf("%q", fmt.Sprintf("%x", sha256.Sum256(body))))
			h.Set("Content-Range", fmt.Sprintf("bytes 0-%d/%d", len(body)-1, len(body)))
			h.Set("X-Echo", echoPrefix+v)
			var r Redactor
			r.Add("KEY", []byte(v))
			resp := &http.Response{Status: "200 OK", StatusCode: 200, Header: h, Trailer: http.Header{}, ContentLength: int64(len(body))}
			r.Response(resp, body)
			got, _ := io.ReadAll(resp.Body)
			return resp, got
		}
		visible := func(resp *http.Response, body []byte) string {
			return fmt.Sprintf("%s %v %d %q", resp.Status, resp.Header, resp.ContentLength, body)
		}
		resp, body := respond(value)
		if cl := resp.Header.Get("Content-Length"); cl != "" && cl != strconv.Itoa(len(body)) || resp.ContentLength != int64(len(body)) {
			t.Fatalf("Content-Length %q, ContentLength %d for %d bytes", cl, resp.ContentLength, len(body))
		}
		// (A short value may be part of a header's name, or of the
		// digits of the new Content-Length: those say nothing of it.)
		for _, s := range append([]string{string(body), resp.Status}, resp.Header["X-Echo"]...) {
			if strings.Contains(strings.ReplaceAll(s, "[redacted:KEY]", "\x00"), value) {
				t.Fatalf("the value %q is in %s", value, visible(resp, body))
			}
		}
		for _, k := range bodyDerived {
			if k != "Content-Length" && resp.Header.Get(k) != "" {
				t.Fatalf("%s is still there: %s", k, visible(resp, body))
			}
		}
		// Where the value is found exactly once, where it was put, a
		// longer value must give the same response.
		other := strings.Repeat("\x02", len(value)+7)
		once := func(v string) bool {
			b, e := prefix+v+suffix, echoPrefix+v
			if strings.Contains(strings.ToLower("200 OK X-Echo"), strings.ToLower(v)) {
				return false // in the status or a header's name as well
			}
			return strings.Index(b, v) == len(prefix) && strings.Count(b, v) == 1 && strings.Index(e, v) == len(echoPrefix) && strings.Count(e, v) == 1
		}
		if !once(value) || !once(other) || strings.Contains(prefix+suffix+echoPrefix, "\x02") {
			return
		}
		if a, b := visible(resp, body), visible(respond(other)); a != b {
			t.Fatalf("the response depends on the value's length:\n%s\n%s", a, b)
		}
	})
}
