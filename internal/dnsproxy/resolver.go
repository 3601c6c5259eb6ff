package dnsproxy

import (
	"context"
	"errors"
	"fmt"
	"net/netip"
	"slices"
	"strings"
	"sync"
	"time"

	"github.com/miekg/dns"
)

// Policy says whether function code may reach an address: nil, or an error
// that names the rule refusing it (the egress package's address policy).
type Policy func(netip.Addr) error

// Allowlist says whether user may resolve name (normalized, with its final
// dot): nil, or an error that says why not. The listener asks for the user
// "". A nil Allowlist allows every name.
type Allowlist func(user, name string) error

// Directory tells which pool addresses serve a function: the network's zone
// answers from it (see the package documentation).
type Directory interface {
	Serving(function string) []netip.AddrPort
}

// Resolver answers questions about names: the network's zone from its
// Directory, every other name from its upstreams through a cache, under the
// Policy and the Allowlist. It is safe for concurrent use.
type Resolver struct {
	cfg     Config
	zone    string // normalized Config.Zone
	policy  Policy
	allow   Allowlist
	dir     Directory
	up      *upstream
	cache   *cache
	flights flights
	now     func() time.Time
}

// New returns a resolver. policy is required (a resolver without one would
// hand out private addresses); allow and dir may be nil: every name is
// allowed, and the zone has no functions.
func New(cfg Config, policy Policy, allow Allowlist, dir Directory) (*Resolver, error) {
	if err := cfg.Validate(); err != nil {
		return nil, fmt.Errorf("dnsproxy: %w", err)
	}
	if policy == nil {
		return nil, errors.New("dnsproxy: no address policy: pass the egress policy, which refuses private addresses")
	}
	zone, _ := Normalize(cfg.Zone)
	now := cfg.Now
	if now == nil {
		now = time.Now
	}
	return &Resolver{
		cfg:    cfg,
		zone:   zone,
		policy: policy,
		allow:  allow,
		dir:    dir,
		up:     newUpstream(cfg),
		cache:  newCache(cfg.CacheEntries),
		now:    now,
	}, nil
}

// Zone returns the network's zone, normalized (with its final dot).
func (r *Resolver) Zone() string { return r.zone }

// Answer is a resolution's result.
type Answer struct {
	// Name is the name asked, normalized; Type the type asked
	// (TypeAddresses for A and AAAA).
	Name string
	Type uint16
	// Chain lists the CNAME targets followed from Name, in order; the
	// records belong to the last one (or to Name when Chain is empty).
	Chain []string
	// Records are the answer's records, those the policy refused left out.
	Records []Record
	// Refused lists the addresses the policy left out of Records.
	Refused []netip.Addr
	// TTL is how long the answer may be kept: the least remaining TTL of
	// the records and CNAMEs it was built from, clamped by the Config.
	TTL time.Duration
	// Authoritative is true for answers from the network's zone.
	Authoritative bool
}

// Record is one record of an answer.
type Record struct {
	Name string // owner, normalized
	Type uint16
	// Addr is an A or AAAA record's address.
	Addr netip.Addr
	// Target is a CNAME's or an SRV's target, normalized.
	Target string
	// Text is a TXT record's strings.
	Text []string
	// Priority, Weight and Port are an SRV record's.
	Priority, Weight, Port uint16
}

// String is the record's value as the API returns it: an address, a CNAME's
// target, a TXT record's strings joined, or an SRV record as
// "priority weight port target".
func (rec Record) String() string {
	switch rec.Type {
	case dns.TypeA, dns.TypeAAAA:
		return rec.Addr.String()
	case dns.TypeCNAME:
		return display(rec.Target)
	case dns.TypeTXT:
		return strings.Join(rec.Text, "")
	case dns.TypeSRV:
		return fmt.Sprintf("%d %d %d %s", rec.Priority, rec.Weight, rec.Port, display(rec.Target))
	}
	return ""
}

// rr is the record in wire form, with ttl.
func (rec Record) rr(ttl time.Duration) dns.RR {
	hdr := dns.RR_Header{Name: rec.Name, Rrtype: rec.Type, Class: dns.ClassINET, Ttl: ttlSeconds(ttl)}
	switch rec.Type {
	case dns.TypeA:
		return &dns.A{Hdr: hdr, A: rec.Addr.AsSlice()}
	case dns.TypeAAAA:
		return &dns.AAAA{Hdr: hdr, AAAA: rec.Addr.AsSlice()}
	case dns.TypeCNAME:
		return &dns.CNAME{Hdr: hdr, Target: rec.Target}
	case dns.TypeTXT:
		return &dns.TXT{Hdr: hdr, Txt: rec.Text}
	case dns.TypeSRV:
		return &dns.SRV{Hdr: hdr, Priority: rec.Priority, Weight: rec.Weight, Port: rec.Port, Target: rec.Target}
	}
	return nil
}

// recordOf turns a cached record into a Record; ok is false for types the
// resolver does not answer.
func recordOf(rr dns.RR) (Record, bool) {
	h := rr.Header()
	rec := Record{Name: strings.ToLower(h.Name), Type: h.Rrtype}
	switch v := rr.(type) {
	case *dns.A:
		a, ok := netip.AddrFromSlice(v.A.To4())
		rec.Addr = a
		return rec, ok
	case *dns.AAAA:
		a, ok := netip.AddrFromSlice(v.AAAA.To16())
		rec.Addr = a
		return rec, ok
	case *dns.CNAME:
		rec.Target = strings.ToLower(dns.Fqdn(v.Target))
	case *dns.TXT:
		rec.Text = v.Txt
	case *dns.SRV:
		rec.Priority, rec.Weight, rec.Port = v.Priority, v.Weight, v.Port
		rec.Target = strings.ToLower(dns.Fqdn(v.Target))
	default:
		return Record{}, false
	}
	return rec, true
}

// Resolve answers user's question about name's records of type qtype
// (TypeAddresses: A and AAAA). Names in the network's zone are answered
// from the Directory; other names must pass the Allowlist and are answered
// from the cache or the upstreams, CNAMEs followed, and the addresses the
// Policy refuses left out. Errors wrap one of the package's sentinel errors.
func (r *Resolver) Resolve(ctx context.Context, user, name string, qtype uint16) (Answer, error) {
	fqdn, err := Normalize(name)
	if err != nil {
		return Answer{}, err
	}
	if err := checkType(qtype); err != nil {
		return Answer{}, err
	}
	if r.InZone(fqdn) {
		return r.zoneAnswer(fqdn, qtype)
	}
	if r.allow != nil {
		if err := r.allow(user, fqdn); err != nil {
			return Answer{}, fmt.Errorf("%w: %s: %w", ErrNameRefused, display(fqdn), err)
		}
	}
	var ans Answer
	if qtype == TypeAddresses {
		ans, err = r.chaseAddresses(ctx, fqdn)
	} else {
		ans, err = r.chase(ctx, fqdn, qtype)
	}
	if err != nil {
		return Answer{}, err
	}
	return r.filter(ans)
}

// LookupNetIP resolves host to its addresses for the egress client (it is
// an egress.Resolver): network is "ip" (A and AAAA), "ip4" or "ip6". It
// goes through the same cache, but neither the allowlist nor the policy
// applies: the egress client has its own host allowlist, and checks every
// address itself, refusing a name whose answer holds any refused address
// whole rather than filtered (docs/RATIONALE.md, "Why the pool answers DNS,
// and what it refuses").
func (r *Resolver) LookupNetIP(ctx context.Context, network, host string) ([]netip.Addr, error) {
	fqdn, err := Normalize(host)
	if err != nil {
		return nil, err
	}
	var qtype uint16
	switch network {
	case "ip":
		qtype = TypeAddresses
	case "ip4":
		qtype = dns.TypeA
	case "ip6":
		qtype = dns.TypeAAAA
	default:
		return nil, fmt.Errorf("%w: network %q; use ip, ip4 or ip6", ErrInvalidType, network)
	}
	var ans Answer
	switch {
	case r.InZone(fqdn):
		ans, err = r.zoneAnswer(fqdn, qtype)
	case qtype == TypeAddresses:
		ans, err = r.chaseAddresses(ctx, fqdn)
	default:
		ans, err = r.chase(ctx, fqdn, qtype)
	}
	if err != nil {
		return nil, err
	}
	addrs := make([]netip.Addr, 0, len(ans.Records))
	for _, rec := range ans.Records {
		addrs = append(addrs, rec.Addr)
	}
	return addrs, nil
}

// chaseAddresses asks for A and AAAA at once and merges the records of both.
func (r *Resolver) chaseAddresses(ctx context.Context, fqdn string) (Answer, error) {
	var (
		wg     sync.WaitGroup
		v4, v6 Answer
		e4, e6 error
	)
	wg.Go(func() { v4, e4 = r.chase(ctx, fqdn, dns.TypeA) })
	v6, e6 = r.chase(ctx, fqdn, dns.TypeAAAA)
	wg.Wait()
	switch {
	case e4 == nil && e6 == nil:
		v4.Records = append(v4.Records, v6.Records...)
		v4.TTL = min(v4.TTL, v6.TTL)
	case e4 == nil:
	case e6 == nil:
		v4 = v6
	default:
		// Neither has records: say the most telling of the two reasons (a
		// name that does not exist has neither; a failed question might).
		for _, target := range []error{context.Canceled, context.DeadlineExceeded, ErrNotFound, ErrCNAMEChain, ErrUpstream} {
			if errors.Is(e4, target) {
				return Answer{}, e4
			}
			if errors.Is(e6, target) {
				return Answer{}, e6
			}
		}
		return Answer{}, fmt.Errorf("%w: %s has no A or AAAA records", ErrNoRecords, display(fqdn))
	}
	v4.Type = TypeAddresses
	return v4, nil
}

// InZone says whether fqdn (normalized) is in the network's zone.
func (r *Resolver) InZone(fqdn string) bool { return dns.IsSubDomain(r.zone, fqdn) }

// filter leaves out the addresses the policy refuses. An answer whose
// addresses are all refused is an error naming the rule.
func (r *Resolver) filter(ans Answer) (Answer, error) {
	kept := make([]Record, 0, len(ans.Records))
	var first error
	for _, rec := range ans.Records {
		if rec.Type != dns.TypeA && rec.Type != dns.TypeAAAA {
			kept = append(kept, rec)
			continue
		}
		if err := r.policy(rec.Addr); err != nil {
			ans.Refused = append(ans.Refused, rec.Addr)
			if first == nil {
				first = err
			}
			continue
		}
		kept = append(kept, rec)
	}
	if len(kept) == 0 && first != nil {
		return Answer{}, fmt.Errorf("%w: %s resolves only to refused addresses (%d, such as %s): %w", ErrAllAddressesRefused, display(ans.Name), len(ans.Refused), ans.Refused[0], first)
	}
	ans.Records = kept
	return ans, nil
}

// chase answers one question, following CNAMEs.
func (r *Resolver) chase(ctx context.Context, fqdn string, qtype uint16) (Answer, error) {
	ans := Answer{Name: fqdn, Type: qtype, TTL: r.cfg.MaxTTL}
	cur := fqdn
	for {
		set, err := r.lookup(ctx, cacheKey{cur, qtype})
		if err != nil {
			return Answer{}, err
		}
		ans.TTL = min(ans.TTL, max(set.expires.Sub(r.now()), time.Second))
		switch {
		case set.cname != "":
			if set.cname == fqdn || slices.Contains(ans.Chain, set.cname) {
				return Answer{}, fmt.Errorf("%w: %s: the CNAME chain loops at %s", ErrCNAMEChain, display(fqdn), display(set.cname))
			}
			if len(ans.Chain) >= r.cfg.MaxCNAMEChain {
				return Answer{}, fmt.Errorf("%w: %s: more than %d CNAMEs in a row", ErrCNAMEChain, display(fqdn), r.cfg.MaxCNAMEChain)
			}
			ans.Chain = append(ans.Chain, set.cname)
			cur = set.cname
		case len(set.records) > 0:
			ans.Records = make([]Record, 0, len(set.records))
			for _, rr := range set.records {
				if rec, ok := recordOf(rr); ok {
					ans.Records = append(ans.Records, rec)
				}
			}
			return ans, nil
		case set.rcode == dns.RcodeNameError:
			return Answer{}, fmt.Errorf("%w: %s", ErrNotFound, chainString(fqdn, ans.Chain))
		default:
			return Answer{}, fmt.Errorf("%w: %s has no %s records", ErrNoRecords, chainString(fqdn, ans.Chain), typeName(qtype))
		}
	}
}

// chainString shows a name and the CNAMEs followed from it.
func chainString(fqdn string, chain []string) string {
	s := display(fqdn)
	for _, c := range chain {
		s += " -> " + display(c)
	}
	return s
}

// lookup returns what is known of one question: from the cache, or else
// from one upstream query shared by all who ask at the same time.
func (r *Resolver) lookup(ctx context.Context, k cacheKey) (rrset, error) {
	if set, ok := r.cache.get(k, r.now()); ok {
		return set, nil
	}
	if err := ctx.Err(); err != nil {
		return rrset{}, err
	}
	set, _, err := r.flights.do(ctx, k, func() (rrset, error) {
		// The query outlives a caller that gives up: others may wait for it,
		// and its answer is cached. The upstream timeout bounds it.
		resp, err := r.up.exchange(context.WithoutCancel(ctx), k.name, k.qtype)
		if err != nil {
			return rrset{}, err
		}
		return r.store(k, resp), nil
	})
	return set, err
}

// store caches what resp says about k's name and the names its CNAMEs lead
// to, and returns what it says about k. A recursive upstream answers a
// question with the whole CNAME chain and the records at its end, so one
// response fills the cache for every name on the chain.
func (r *Resolver) store(k cacheKey, resp upstreamAnswer) rrset {
	now := r.now()
	var first rrset
	cur := k.name
	seen := map[string]bool{}
	for hop := 0; ; hop++ {
		var records []dns.RR
		var cname *dns.CNAME
		for _, rr := range resp.answer {
			h := rr.Header()
			if h.Class != dns.ClassINET || !strings.EqualFold(h.Name, cur) {
				continue
			}
			switch {
			case h.Rrtype == k.qtype:
				records = append(records, rr)
			case h.Rrtype == dns.TypeCNAME && cname == nil:
				cname = rr.(*dns.CNAME)
			}
		}
		var set rrset
		cacheable := true
		switch {
		case len(records) > 0:
			ttl := records[0].Header().Ttl
			for _, rr := range records[1:] {
				ttl = min(ttl, rr.Header().Ttl)
			}
			set = rrset{records: records, expires: now.Add(clampTTL(ttl, r.cfg.MinTTL, r.cfg.MaxTTL))}
		case cname != nil:
			set = rrset{cname: strings.ToLower(dns.Fqdn(cname.Target)), expires: now.Add(clampTTL(cname.Hdr.Ttl, r.cfg.MinTTL, r.cfg.MaxTTL))}
		default:
			// Nothing for cur: the response's rcode and SOA are about the
			// last name of the chain (RFC 2308, section 2.1), which cur is.
			ttl, ok := negativeTTL(resp.authority, r.cfg.MaxNegativeTTL)
			set = rrset{rcode: resp.rcode, expires: now.Add(ttl)}
			cacheable = ok && ttl > 0
			if hop > 0 && resp.rcode == dns.RcodeSuccess && !ok {
				// The upstream stopped at a CNAME without saying why: ask
				// about the target on its own rather than guess.
				return first
			}
		}
		if cacheable {
			r.cache.put(cacheKey{cur, k.qtype}, set)
		}
		if hop == 0 {
			first = set
		}
		if set.cname == "" || seen[set.cname] || hop >= r.cfg.MaxCNAMEChain {
			return first
		}
		seen[cur] = true
		cur = set.cname
	}
}
