package egress

import (
	"fmt"
	"net/url"
	"strconv"
	"strings"
)

// AllowHostFlag is the deployer's flag that names the hosts a function may
// reach; error messages name it.
const AllowHostFlag = "--allow-host"

// Rule is one allowed destination: a scheme, a host or a host pattern, and
// a port. The pattern "*.example.com" matches exactly one label more
// ("api.example.com", not "example.com" nor "a.b.example.com"), as a TLS
// wildcard certificate does.
type Rule struct {
	Scheme string
	Host   string // normalised as Target.Host; a pattern starts with "*."
	Port   uint16
}

// String is the rule's canonical form, which ParseRule reads back.
func (r Rule) String() string {
	if r.Port == defaultPort[r.Scheme] {
		if strings.Contains(r.Host, ":") {
			return r.Scheme + "://[" + r.Host + "]"
		}
		return r.Scheme + "://" + r.Host
	}
	return r.Scheme + "://" + joinHostPort(r.Host, r.Port)
}

// Matches reports whether t is a destination r allows.
func (r Rule) Matches(t Target) bool {
	if r.Scheme != t.Scheme || r.Port != t.Port {
		return false
	}
	if suffix, ok := strings.CutPrefix(r.Host, "*"); ok {
		label, rest, found := strings.Cut(t.Host, ".")
		return found && label != "" && "."+rest == suffix && !t.Addr.IsValid()
	}
	return r.Host == t.Host
}

// ParseRule parses a host rule as written after --allow-host:
//
//	https://api.example.com        port 443
//	https://*.example.com          any one label before example.com
//	http://host.example:8080       an explicit port
//	https://[2001:db8::1]          an IP literal (the address policy still applies)
//
// A scheme is required; a path, query, user info or a '*' anywhere but as
// the whole leftmost label are refused.
func ParseRule(s string) (Rule, error) {
	bad := func(why string) (Rule, error) {
		return Rule{}, fmt.Errorf("host rule %q: %s: %w", cut(s), why, ErrInvalidRule)
	}
	scheme, rest, ok := strings.Cut(s, "://")
	if !ok {
		return bad("write it with a scheme, like https://api.example.com")
	}
	scheme = strings.ToLower(scheme)
	port, ok := defaultPort[scheme]
	if !ok {
		return bad("the scheme must be http or https")
	}
	rest = strings.TrimSuffix(rest, "/")
	if strings.ContainsAny(rest, "/?#") {
		return bad("a rule names a scheme, a host and a port only, not a path or query")
	}
	if strings.Contains(rest, "@") {
		return bad("a rule may not carry user info")
	}
	hostport := rest
	host := hostport
	if strings.HasPrefix(hostport, "[") {
		end := strings.IndexByte(hostport, ']')
		if end < 0 {
			return bad("an IPv6 address needs a closing ']'")
		}
		host = hostport[1:end]
		if !strings.Contains(host, ":") {
			return bad("only IPv6 addresses go in brackets")
		}
		switch after := hostport[end+1:]; {
		case after == "":
		case strings.HasPrefix(after, ":"):
			p, err := parsePort(after[1:])
			if err != nil {
				return bad(err.Error())
			}
			port = p
		default:
			return bad("only a port may follow ']'")
		}
	} else if i := strings.LastIndexByte(hostport, ':'); i >= 0 {
		p, err := parsePort(hostport[i+1:])
		if err != nil {
			return bad(err.Error())
		}
		host, port = hostport[:i], p
	}
	if host == "" {
		return bad("the host is missing")
	}
	if strings.Contains(host, ":") && !strings.HasPrefix(hostport, "[") {
		return bad("write an IPv6 address in brackets, as in https://[2001:db8::1]")
	}
	wildcard := false
	if after, ok := strings.CutPrefix(host, "*."); ok {
		wildcard, host = true, after
	}
	if strings.Contains(host, "*") {
		return bad("'*' may only stand for a whole leftmost label, as in *.example.com")
	}
	norm, addr, err := normalizeHost(host)
	if err != nil {
		return bad(strings.TrimSuffix(err.Error(), ": "+ErrInvalidURL.Error()))
	}
	if wildcard {
		if addr.IsValid() {
			return bad("'*' cannot stand for part of an IP address")
		}
		if !strings.Contains(norm, ".") {
			return bad("'*.' must be followed by at least two labels, as in *.example.com")
		}
		norm = "*." + norm
	}
	return Rule{Scheme: scheme, Host: norm, Port: port}, nil
}

func parsePort(s string) (uint16, error) {
	n, err := strconv.ParseUint(s, 10, 16)
	if err != nil || n == 0 {
		return 0, fmt.Errorf("port %q is not a number from 1 to 65535", s)
	}
	return uint16(n), nil
}

// Allowlist is the destinations one function may reach (the rules of its
// deploy's --allow-host flags), deny by default: an empty Allowlist allows
// nothing.
type Allowlist struct {
	rules []Rule
}

// ParseAllowlist parses each rule with ParseRule.
func ParseAllowlist(rules []string) (*Allowlist, error) {
	a := &Allowlist{rules: make([]Rule, 0, len(rules))}
	for _, s := range rules {
		r, err := ParseRule(s)
		if err != nil {
			return nil, err
		}
		a.rules = append(a.rules, r)
	}
	return a, nil
}

// Rules lists the allowlist's rules.
func (a *Allowlist) Rules() []Rule {
	if a == nil {
		return nil
	}
	return append([]Rule(nil), a.rules...)
}

// String lists the rules, comma-separated, for messages.
func (a *Allowlist) String() string {
	if a == nil || len(a.rules) == 0 {
		return "(none)"
	}
	ss := make([]string, len(a.rules))
	for i, r := range a.rules {
		ss[i] = r.String()
	}
	return strings.Join(ss, ", ")
}

// Allows returns the first rule that allows t, or an error wrapping
// ErrHostNotAllowed that lists the rules.
func (a *Allowlist) Allows(t Target) (Rule, error) {
	if a != nil {
		for _, r := range a.rules {
			if r.Matches(t) {
				return r, nil
			}
		}
	}
	if a == nil || len(a.rules) == 0 {
		return Rule{}, fmt.Errorf("%s is not allowed: the function may reach no host; deploy it with %s %s to allow this one: %w",
			t, AllowHostFlag, Rule{t.Scheme, t.Host, t.Port}, ErrHostNotAllowed)
	}
	return Rule{}, fmt.Errorf("%s is not allowed: no %s rule matches it (the function's rules: %s): %w",
		t, AllowHostFlag, a, ErrHostNotAllowed)
}

// Match parses raw with ParseURL and returns the rule that allows it.
func (a *Allowlist) Match(raw string) (Rule, error) {
	_, t, err := ParseURL(raw)
	if err != nil {
		return Rule{}, err
	}
	return a.Allows(t)
}

// matchURL is Match for a parsed URL, which it normalises in place.
func (a *Allowlist) matchURL(u *url.URL) (Target, error) {
	t, err := targetOf(u)
	if err != nil {
		return Target{}, err
	}
	_, err = a.Allows(t)
	return t, err
}
