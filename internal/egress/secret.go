package egress

import (
	"bytes"
	"context"
	"fmt"
	"io"
	"net/http"
	"net/url"
	"sort"
	"strconv"
	"strings"
	"sync"

	"github.com/hivemind/taskworker/internal/names"
	"github.com/hivemind/taskworker/internal/serving"
)

// A template in a header or query value, replaced on the way out by the
// value of the secret it names.
const (
	templateOpen  = "{{secret:"
	templateClose = "}}"
)

// Secrets looks up the current value of a secret of the function's owner.
// The pool's implementation checks the function's grant and records the read;
// Inject asks only for secrets the request's templates name and whose grant
// allows the request's destination.
type Secrets interface {
	Secret(ctx context.Context, name string) ([]byte, error)
}

// SecretsFunc adapts a function to Secrets.
type SecretsFunc func(ctx context.Context, name string) ([]byte, error)

// Secret calls f.
func (f SecretsFunc) Secret(ctx context.Context, name string) ([]byte, error) { return f(ctx, name) }

// Grants says, for each secret a function may use, the destinations its
// value may be sent to (the rules of the grant). A secret not in Grants is
// not granted.
type Grants map[string]*Allowlist

// templateNames lists the secret names s's templates name, in order, or an
// error wrapping ErrTemplate for one that is not well formed or whose name
// names.Secret refuses.
func templateNames(s string) ([]string, error) {
	var found []string
	for {
		i := strings.Index(s, templateOpen)
		if i < 0 {
			return found, nil
		}
		s = s[i+len(templateOpen):]
		j := strings.Index(s, templateClose)
		if j < 0 {
			return nil, fmt.Errorf("a %sNAME%s template is not closed: %w", templateOpen, templateClose, ErrTemplate)
		}
		name := s[:j]
		if err := names.Secret(name); err != nil {
			return nil, fmt.Errorf("template %s%s%s: %v: %w", templateOpen, cut(name), templateClose, err, ErrTemplate)
		}
		found = append(found, name)
		s = s[j+len(templateClose):]
	}
}

// expand replaces s's templates with values.
func expand(s string, values map[string][]byte) string {
	var b strings.Builder
	for {
		i := strings.Index(s, templateOpen)
		if i < 0 {
			b.WriteString(s)
			return b.String()
		}
		b.WriteString(s[:i])
		s = s[i+len(templateOpen):]
		j := strings.Index(s, templateClose)
		b.Write(values[s[:j]])
		s = s[j+len(templateClose):]
	}
}

// noTemplate refuses a template where none is replaced.
func noTemplate(where, s string) error {
	if strings.Contains(s, templateOpen) {
		return fmt.Errorf("the request's %s holds a %sNAME%s template: templates are replaced only in header values and query values: %w",
			where, templateOpen, templateClose, ErrTemplate)
	}
	return nil
}

// Inject returns a copy of req, bound for t (its normalised target), whose
// header values and, if query is set, query values have their
// {{secret:NAME}} templates replaced by the secrets' values; and the values
// it used, by name. Every secret named must be granted for t, else nothing is
// looked up and the error wraps ErrSecretNotGranted.
//
// Templates in the URL's path or host, in query keys or in header names are
// refused (ErrTemplate): a secret in a path ends up in logs along the way.
// The body is sent as it is: the pool does not parse bodies, so a template
// there stays literal text.
func Inject(ctx context.Context, req *http.Request, t Target, query bool, grants Grants, secrets Secrets) (*http.Request, map[string][]byte, error) {
	for _, check := range []struct{ where, s string }{
		{"path", req.URL.Path}, {"path", req.URL.RawPath}, {"host", req.URL.Host}, {"Host", req.Host},
	} {
		if err := noTemplate(check.where, check.s); err != nil {
			return nil, nil, err
		}
	}
	// Find every template, in order, before looking anything up.
	var names []string
	for k, vs := range req.Header {
		if err := noTemplate("header name "+cut(k), k); err != nil {
			return nil, nil, err
		}
		for _, v := range vs {
			ns, err := templateNames(v)
			if err != nil {
				return nil, nil, fmt.Errorf("header %s: %w", k, err)
			}
			names = append(names, ns...)
		}
	}
	pairs := strings.Split(req.URL.RawQuery, "&")
	decoded := make([]string, len(pairs))
	queryHas := false
	for i, p := range pairs {
		k, v, _ := strings.Cut(p, "=")
		if err := noTemplate("query key", k); err != nil {
			return nil, nil, err
		}
		dk, err := url.QueryUnescape(k)
		switch {
		case err == nil:
			if err := noTemplate("query key", dk); err != nil {
				return nil, nil, err
			}
		case strings.Contains(p, templateOpen):
			return nil, nil, fmt.Errorf("query parameter %q is not escaped correctly around its template: %w", cut(k), ErrTemplate)
		}
		dv, err := url.QueryUnescape(v)
		if err != nil {
			if strings.Contains(v, templateOpen) {
				return nil, nil, fmt.Errorf("query parameter %q is not escaped correctly around its template: %w", cut(k), ErrTemplate)
			}
			continue
		}
		decoded[i] = dv
		if !strings.Contains(dv, templateOpen) {
			continue
		}
		if !query {
			return nil, nil, fmt.Errorf("query parameter %q holds a template after a redirect: templates are replaced only in the function's own request: %w", cut(dk), ErrTemplate)
		}
		ns, err := templateNames(dv)
		if err != nil {
			return nil, nil, fmt.Errorf("query parameter %q: %w", cut(dk), err)
		}
		names = append(names, ns...)
		queryHas = true
	}
	if len(names) == 0 {
		return req, nil, nil
	}
	sort.Strings(names)
	names = compact(names)
	for _, n := range names {
		g, ok := grants[n]
		if !ok || g == nil {
			return nil, nil, fmt.Errorf("secret %s is not granted to this function: grant it with 'taskworker secret grant %s --function NAME' or deploy with --secret %s: %w",
				n, n, n, ErrSecretNotGranted)
		}
		if len(g.rules) == 0 {
			return nil, nil, fmt.Errorf("secret %s may be sent to no host by this request: its grant names no host, so it follows the function's deployed %s rules, which only the function's calls carry; grant it with 'taskworker secret grant %s --function NAME --host RULE': %w",
				n, AllowHostFlag, n, ErrSecretNotGranted)
		}
		if _, err := g.Allows(t); err != nil {
			return nil, nil, fmt.Errorf("secret %s may be sent only to %s, and this request goes to %s: %w", n, g, t, ErrSecretNotGranted)
		}
	}
	values := make(map[string][]byte, len(names))
	for _, n := range names {
		v, err := secrets.Secret(ctx, n)
		if err != nil {
			return nil, nil, fmt.Errorf("secret %s: %w", n, err)
		}
		values[n] = v
	}
	out := req.Clone(ctx)
	for k, vs := range out.Header {
		for i, v := range vs {
			if !strings.Contains(v, templateOpen) {
				continue
			}
			for _, n := range mustNames(v) {
				if !validHeaderValue(values[n]) {
					return nil, nil, fmt.Errorf("secret %s cannot go in header %s: its value holds a control character (CR, LF, NUL, ...): %w", n, k, ErrTemplate)
				}
			}
			vs[i] = expand(v, values)
		}
	}
	if queryHas {
		for i, p := range pairs {
			if !strings.Contains(decoded[i], templateOpen) {
				continue
			}
			k, _, _ := strings.Cut(p, "=")
			pairs[i] = k + "=" + url.QueryEscape(expand(decoded[i], values))
		}
		out.URL.RawQuery = strings.Join(pairs, "&")
	}
	return out, values, nil
}

func mustNames(s string) []string {
	ns, _ := templateNames(s)
	return ns
}

func compact(ss []string) []string {
	out := ss[:0]
	for i, s := range ss {
		if i == 0 || s != ss[i-1] {
			out = append(out, s)
		}
	}
	return out
}

func validHeaderValue(v []byte) bool {
	for _, c := range v {
		if c < 0x20 && c != '\t' || c == 0x7f {
			return false
		}
	}
	return true
}

// Redactor replaces secret values in what comes back with [redacted:NAME].
// It is safe for concurrent use.
type Redactor struct {
	mu      sync.RWMutex
	secrets []redacted // longest value first, so one inside another is found whole
}

type redacted struct {
	name  string
	value []byte
	mark  []byte
}

// Add makes r redact value, as [redacted:name]. Empty values are ignored.
func (r *Redactor) Add(name string, value []byte) {
	if len(value) == 0 {
		return
	}
	r.mu.Lock()
	defer r.mu.Unlock()
	for _, s := range r.secrets {
		if bytes.Equal(s.value, value) {
			return
		}
	}
	r.secrets = append(r.secrets, redacted{name: name, value: bytes.Clone(value), mark: []byte("[redacted:" + name + "]")})
	sort.SliceStable(r.secrets, func(i, j int) bool { return len(r.secrets[i].value) > len(r.secrets[j].value) })
}

// Bytes returns b with every value replaced; b itself if none occurs.
func (r *Redactor) Bytes(b []byte) []byte {
	r.mu.RLock()
	defer r.mu.RUnlock()
	for _, s := range r.secrets {
		if bytes.Contains(b, s.value) {
			b = bytes.ReplaceAll(b, s.value, s.mark)
		}
	}
	return b
}

// String is Bytes for a string.
func (r *Redactor) String(s string) string {
	r.mu.RLock()
	defer r.mu.RUnlock()
	for _, sec := range r.secrets {
		if strings.Contains(s, string(sec.value)) {
			s = strings.ReplaceAll(s, string(sec.value), string(sec.mark))
		}
	}
	return s
}

// Header returns h with every value replaced in its values, and in its
// names whatever their case (names are canonicalised on the way).
func (r *Redactor) Header(h http.Header) http.Header {
	out := make(http.Header, len(h))
	for k, vs := range h {
		rk := r.name(k)
		for _, v := range vs {
			out[rk] = append(out[rk], r.String(v))
		}
	}
	return out
}

// bodyDerived are the response headers computed from the body as the
// server sent it. Once redaction changes the body, they describe a body the
// function never gets, and they are functions of the secret's value: its
// length (Content-Length less the marks, Content-Range's complete length),
// or a digest of a text that holds it, which would let anyone check a guess
// offline.
var bodyDerived = []string{"Content-Length", "Content-Range", "Content-Md5", "Digest", "Content-Digest", "Repr-Digest", "Etag"}

// Response redacts resp, whose body the caller has read whole as body: its
// status, headers and trailers as Header does, its body as Bytes does. If
// redaction changed the body, the headers derived from the original body
// (bodyDerived) are dropped and Content-Length is the redacted body's, so
// that nothing in the response depends on the value's length. So they are
// when a value was injected and the response describes a body it does not
// carry (an answer to HEAD, a 304): the pool cannot see whether that body
// held the value.
func (r *Redactor) Response(resp *http.Response, body []byte) {
	red := r.Bytes(body)
	changed := !bytes.Equal(red, body)
	unseen := len(body) == 0 && !r.empty() && resp.Header.Get("Content-Length") != "0"
	if changed || unseen {
		// Before the names are redacted: a short value may be part of
		// one.
		for _, k := range bodyDerived {
			resp.Header.Del(k)
			resp.Trailer.Del(k)
		}
	}
	resp.Status = r.String(resp.Status)
	resp.Header = r.Header(resp.Header)
	resp.Trailer = r.Header(resp.Trailer)
	if changed {
		resp.Header.Set("Content-Length", strconv.Itoa(len(red)))
	}
	resp.Body = io.NopCloser(bytes.NewReader(red))
	resp.ContentLength = int64(len(red))
}

// Error returns err, or an error of the same kind whose message has every
// value replaced if err's message held one. The replacement does not wrap
// err (its chain might print the value) but keeps its kind.
func (r *Redactor) Error(err error) error {
	if err == nil {
		return nil
	}
	msg := err.Error()
	red := r.String(msg)
	if red == msg {
		return err
	}
	return serving.NewError(serving.KindOf(err), red)
}

// name redacts a header name, ignoring case.
func (r *Redactor) name(k string) string {
	r.mu.RLock()
	defer r.mu.RUnlock()
	for _, sec := range r.secrets {
		v := strings.ToLower(string(sec.value))
		for from := 0; ; {
			i := strings.Index(strings.ToLower(k[from:]), v)
			if i < 0 || len(strings.ToLower(k[from:])) != len(k[from:]) {
				break
			}
			k = k[:from+i] + string(sec.mark) + k[from+i+len(v):]
			from += i + len(sec.mark)
		}
	}
	return k
}

func (r *Redactor) empty() bool {
	r.mu.RLock()
	defer r.mu.RUnlock()
	return len(r.secrets) == 0
}
