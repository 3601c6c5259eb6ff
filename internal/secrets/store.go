package secrets

import (
	"context"
	"crypto/rand"
	"encoding/hex"
	"encoding/json"
	"errors"
	"fmt"
	"slices"
	"strings"
	"sync"
	"time"

	clientv3 "go.etcd.io/etcd/client/v3"

	"github.com/hivemind/taskworker/internal/egress"
	"github.com/hivemind/taskworker/internal/keyring"
	"github.com/hivemind/taskworker/internal/names"
	"github.com/hivemind/taskworker/internal/serving"
)

// Limits.
const (
	MaxValueBytes  = 64 << 10
	MaxVersions    = 10
	AuditRetention = 30 * 24 * time.Hour
)

// Errors a caller maps to statuses (Server does): ErrNotFound and
// ErrNoGrant to NotFound, ErrNotGranted to PermissionDenied, ErrTooLarge,
// ErrEmpty, names.ErrInvalid and egress.ErrInvalidRule to InvalidArgument. Anything
// else is the control plane's failure.
var (
	ErrNotFound   = errors.New("no such secret")
	ErrNotGranted = errors.New("the function has no grant for the secret")
	ErrNoGrant    = errors.New("no such grant")
	ErrTooLarge   = fmt.Errorf("a secret's value is at most %d bytes", MaxValueBytes)
	ErrEmpty      = errors.New("a secret's value may not be empty")
)

// record is what etcd holds under secrets/<owner>/<name>.
type record struct {
	Versions  []version `json:"versions"`         // oldest first
	Grants    []Grant   `json:"grants,omitempty"` // by function
	CreatedMs int64     `json:"created_ms"`
	UpdatedMs int64     `json:"updated_ms"`
}

type version struct {
	Version   int64  `json:"v"`
	Key       string `json:"key"`   // the data key, wrapped
	Value     []byte `json:"value"` // sealed
	CreatedMs int64  `json:"created_ms"`
}

// Grant lets one function of the secret's owner use the secret.
//
// A grant with Hosts lets the value go only toward those destinations
// (--allow-host rules, in canonical form), injected by the egress proxy
// ({{secret:NAME}}); the function never sees the value itself, and Read
// refuses it. A grant without Hosts lets the function read the value, and
// have it injected toward any host its own --allow-host rules allow (it
// could send the value there anyway).
type Grant struct {
	Function string   `json:"function"`
	Hosts    []string `json:"hosts,omitempty"`
}

// Info describes a secret, never its value.
type Info struct {
	Name      string
	Versions  []int64 // kept versions, oldest first
	Grants    []Grant // by function
	CreatedAt time.Time
	UpdatedAt time.Time
}

// Event is one read of a secret.
type Event struct {
	Owner    string `json:"owner"`
	Secret   string `json:"secret"`
	Version  int64  `json:"version"`
	Function string `json:"function"`
	Caller   string `json:"caller,omitempty"` // who called the function
	// Injected: the egress proxy read the value to send it out, and the
	// function never saw it.
	Injected bool      `json:"injected,omitempty"`
	At       time.Time `json:"at"`
}

// Store keeps secrets in etcd under a prefix.
type Store struct {
	cli    *clientv3.Client
	prefix string
	ring   *keyring.Keyring
	now    func() time.Time

	mu     sync.Mutex
	leases map[int64]clientv3.LeaseID // day -> the lease of that day's events
}

// New returns a store over cli, its keys under prefix, its data keys
// wrapped by ring.
func New(cli *clientv3.Client, prefix string, ring *keyring.Keyring) *Store {
	return &Store{cli: cli, prefix: prefix, ring: ring, now: time.Now, leases: map[int64]clientv3.LeaseID{}}
}

func (s *Store) userSecrets(owner string) string { return s.prefix + "secrets/" + owner + "/" }
func (s *Store) key(owner, name string) string   { return s.userSecrets(owner) + name }
func (s *Store) userAudit(owner string) string   { return s.prefix + "audit/" + owner + "/" }

// context binds a version's data key to the version.
func wrapContext(owner, name string, v int64) string {
	return fmt.Sprintf("secret %s/%s v%d", owner, name, v)
}

func check(owner, name string) error {
	if err := names.User(owner); err != nil {
		return err
	}
	return names.Secret(name)
}

// get returns the record of a secret and its mod revision (0 if absent).
func (s *Store) get(ctx context.Context, owner, name string) (*record, int64, error) {
	resp, err := s.cli.Get(ctx, s.key(owner, name))
	if err != nil {
		return nil, 0, err
	}
	if len(resp.Kvs) == 0 {
		return nil, 0, nil
	}
	rec := &record{}
	if err := json.Unmarshal(resp.Kvs[0].Value, rec); err != nil {
		return nil, 0, fmt.Errorf("secret %s of %s: unreadable record: %w", name, owner, err)
	}
	return rec, resp.Kvs[0].ModRevision, nil
}

// update applies change to a secret's record (nil if absent) and writes it
// back if no one changed it meanwhile, retrying otherwise. A nil result
// deletes the secret.
func (s *Store) update(ctx context.Context, owner, name string, change func(*record) (*record, error)) error {
	key := s.key(owner, name)
	for {
		rec, rev, err := s.get(ctx, owner, name)
		if err != nil {
			return err
		}
		next, err := change(rec)
		if err != nil {
			return err
		}
		var op clientv3.Op
		if next == nil {
			op = clientv3.OpDelete(key)
		} else {
			b, err := json.Marshal(next)
			if err != nil {
				return err
			}
			op = clientv3.OpPut(key, string(b))
		}
		resp, err := s.cli.Txn(ctx).If(clientv3.Compare(clientv3.ModRevision(key), "=", rev)).Then(op).Commit()
		if err != nil {
			return err
		}
		if resp.Succeeded {
			return nil
		}
	}
}

// Put stores a new version of a secret, creating it if needed, and
// returns the version.
func (s *Store) Put(ctx context.Context, owner, name string, value []byte) (int64, error) {
	if err := check(owner, name); err != nil {
		return 0, err
	}
	if len(value) > MaxValueBytes {
		return 0, ErrTooLarge
	}
	if len(value) == 0 {
		return 0, fmt.Errorf("secret %s: %w", name, ErrEmpty)
	}
	var v int64
	err := s.update(ctx, owner, name, func(rec *record) (*record, error) {
		now := s.now().UnixMilli()
		if rec == nil {
			rec = &record{CreatedMs: now}
		}
		v = 1
		if n := len(rec.Versions); n > 0 {
			v = rec.Versions[n-1].Version + 1
		}
		d := keyring.NewDataKey()
		wrapped, err := s.ring.Wrap(d, wrapContext(owner, name, v))
		if err != nil {
			return nil, err
		}
		sealer, err := d.Sealer()
		if err != nil {
			return nil, err
		}
		rec.Versions = append(rec.Versions, version{Version: v, Key: wrapped, Value: sealer.Seal(nil, 0, value), CreatedMs: now})
		if len(rec.Versions) > MaxVersions {
			rec.Versions = slices.Clone(rec.Versions[len(rec.Versions)-MaxVersions:])
		}
		rec.UpdatedMs = now
		return rec, nil
	})
	return v, err
}

// Delete removes a secret, every version and grant.
func (s *Store) Delete(ctx context.Context, owner, name string) error {
	if err := check(owner, name); err != nil {
		return err
	}
	return s.update(ctx, owner, name, func(rec *record) (*record, error) {
		if rec == nil {
			return nil, fmt.Errorf("secret %s: %w", name, ErrNotFound)
		}
		return nil, nil
	})
}

// Grant lets function (of the same owner) use the secret: read it, or with
// hosts, have it injected toward those destinations only (see Grant).
// Granting again replaces the hosts. It returns the secret's description
// after the change.
func (s *Store) Grant(ctx context.Context, owner, name, function string, hosts []string) (Info, error) {
	rules, err := canonicalHosts(hosts)
	if err != nil {
		return Info{}, err
	}
	return s.changeGrant(ctx, owner, name, function, func(rec *record, i int, found bool) error {
		g := Grant{Function: function, Hosts: rules}
		if found {
			rec.Grants[i] = g
		} else {
			rec.Grants = slices.Insert(rec.Grants, i, g)
		}
		return nil
	})
}

// Revoke takes function's grant away (ErrNoGrant if it had none); reads
// already returned stay returned. It returns the secret's description
// after the change.
func (s *Store) Revoke(ctx context.Context, owner, name, function string) (Info, error) {
	return s.changeGrant(ctx, owner, name, function, func(rec *record, i int, found bool) error {
		if !found {
			return fmt.Errorf("function %s, secret %s: %w (granted to: %s)", function, name, ErrNoGrant, grantees(rec.Grants))
		}
		rec.Grants = slices.Delete(rec.Grants, i, i+1)
		return nil
	})
}

func grantees(gs []Grant) string {
	if len(gs) == 0 {
		return "no function"
	}
	fs := make([]string, len(gs))
	for i, g := range gs {
		fs[i] = g.Function
	}
	return strings.Join(fs, ", ")
}

// canonicalHosts parses grant hosts as --allow-host rules and returns
// their canonical forms, sorted and without repeats.
func canonicalHosts(hosts []string) ([]string, error) {
	var out []string
	for _, h := range hosts {
		r, err := egress.ParseRule(h)
		if err != nil {
			return nil, fmt.Errorf("grant host: %w", err)
		}
		out = append(out, r.String())
	}
	slices.Sort(out)
	return slices.Compact(out), nil
}

// findGrant returns where function's grant is in gs (sorted by function),
// or where it would go.
func findGrant(gs []Grant, function string) (int, bool) {
	return slices.BinarySearchFunc(gs, function, func(g Grant, f string) int { return strings.Compare(g.Function, f) })
}

func (s *Store) changeGrant(ctx context.Context, owner, name, function string, change func(rec *record, i int, found bool) error) (Info, error) {
	if err := check(owner, name); err != nil {
		return Info{}, err
	}
	if err := names.Function(function); err != nil {
		return Info{}, err
	}
	var info Info
	err := s.update(ctx, owner, name, func(rec *record) (*record, error) {
		if rec == nil {
			return nil, fmt.Errorf("secret %s: %w", name, ErrNotFound)
		}
		i, found := findGrant(rec.Grants, function)
		if err := change(rec, i, found); err != nil {
			return nil, err
		}
		rec.UpdatedMs = s.now().UnixMilli()
		info = rec.info(name)
		return rec, nil
	})
	return info, err
}

func (rec *record) info(name string) Info {
	info := Info{
		Name:      name,
		Grants:    slices.Clone(rec.Grants),
		CreatedAt: time.UnixMilli(rec.CreatedMs),
		UpdatedAt: time.UnixMilli(rec.UpdatedMs),
	}
	for _, v := range rec.Versions {
		info.Versions = append(info.Versions, v.Version)
	}
	return info
}

// List describes the owner's secrets, by name.
func (s *Store) List(ctx context.Context, owner string) ([]Info, error) {
	if err := names.User(owner); err != nil {
		return nil, err
	}
	resp, err := s.cli.Get(ctx, s.userSecrets(owner), clientv3.WithPrefix(), clientv3.WithSort(clientv3.SortByKey, clientv3.SortAscend))
	if err != nil {
		return nil, err
	}
	var out []Info
	for _, kv := range resp.Kvs {
		var rec record
		if err := json.Unmarshal(kv.Value, &rec); err != nil {
			continue
		}
		out = append(out, rec.info(strings.TrimPrefix(string(kv.Key), s.userSecrets(owner))))
	}
	return out, nil
}

// Reader is who reads a secret: a function of the owner, during a call
// made by Caller.
type Reader struct {
	Owner    string
	Function string
	Caller   string
}

// Read returns a secret's value for r.Function, which must hold a grant
// without hosts (a grant with hosts is for injection only; see Grant): the
// latest version, or the one asked for (version > 0). The read is recorded
// before the value is returned.
func (s *Store) Read(ctx context.Context, r Reader, name string, want int64) ([]byte, int64, error) {
	return s.read(ctx, r, name, want, false)
}

// read is Read; inject says the value goes to the egress proxy, which
// checks the grant's hosts itself, so a grant with hosts is enough.
func (s *Store) read(ctx context.Context, r Reader, name string, want int64, inject bool) ([]byte, int64, error) {
	if err := check(r.Owner, name); err != nil {
		return nil, 0, err
	}
	if err := names.Function(r.Function); err != nil {
		return nil, 0, err
	}
	rec, _, err := s.get(ctx, r.Owner, name)
	if err != nil {
		return nil, 0, err
	}
	if rec == nil {
		return nil, 0, fmt.Errorf("secret %s: %w", name, ErrNotFound)
	}
	g, ok := findGrant(rec.Grants, r.Function)
	if !ok {
		return nil, 0, fmt.Errorf("function %s, secret %s: %w; grant it with `taskworker secret grant %s --function %s`", r.Function, name, ErrNotGranted, name, r.Function)
	}
	if hosts := rec.Grants[g].Hosts; len(hosts) > 0 && !inject {
		return nil, 0, fmt.Errorf("function %s, secret %s: %w to read: its grant lets the egress proxy send the value to %s only, as {{secret:%s}} in a request's header or query value",
			r.Function, name, ErrNotGranted, strings.Join(hosts, ", "), name)
	}
	i := len(rec.Versions) - 1
	if want > 0 {
		i = slices.IndexFunc(rec.Versions, func(v version) bool { return v.Version == want })
	}
	if i < 0 {
		return nil, 0, fmt.Errorf("secret %s version %d: %w (kept: the last %d)", name, want, ErrNotFound, MaxVersions)
	}
	v := rec.Versions[i]
	d, err := s.ring.Unwrap(v.Key, wrapContext(r.Owner, name, v.Version))
	if err != nil {
		return nil, 0, err
	}
	sealer, err := d.Sealer()
	if err != nil {
		return nil, 0, err
	}
	value, err := sealer.Open(nil, 0, v.Value)
	if err != nil {
		return nil, 0, fmt.Errorf("secret %s version %d: %w", name, v.Version, err)
	}
	e := Event{Owner: r.Owner, Secret: name, Version: v.Version, Function: r.Function, Caller: r.Caller, Injected: inject, At: s.now()}
	if err := s.audit(ctx, e); err != nil {
		return nil, 0, fmt.Errorf("recording the read of secret %s: %w", name, err)
	}
	return value, v.Version, nil
}

// EgressGrants returns what the egress proxy needs for a call of function
// (of owner, made by caller) to inject its secrets: each secret it is
// granted, with the destinations its value may go to (the grant's hosts,
// or allow, the function's own --allow-host rules, for a grant without
// hosts), and the lookup of their values. Each lookup checks the grant
// again and is recorded as a read ([Event.Injected]).
func (s *Store) EgressGrants(ctx context.Context, owner, function, caller string, allow *egress.Allowlist) (egress.Grants, egress.Secrets, error) {
	r := Reader{Owner: owner, Function: function, Caller: caller}
	if err := names.Function(r.Function); err != nil {
		return nil, nil, err
	}
	list, err := s.List(ctx, r.Owner)
	if err != nil {
		return nil, nil, err
	}
	if allow == nil {
		allow = &egress.Allowlist{}
	}
	grants := egress.Grants{}
	for _, info := range list {
		i, ok := findGrant(info.Grants, r.Function)
		if !ok {
			continue
		}
		grants[info.Name] = allow
		if hosts := info.Grants[i].Hosts; len(hosts) > 0 {
			if grants[info.Name], err = egress.ParseAllowlist(hosts); err != nil {
				return nil, nil, fmt.Errorf("secret %s: the grant of %s: %w", info.Name, r.Function, err)
			}
		}
	}
	lookup := egress.SecretsFunc(func(ctx context.Context, name string) ([]byte, error) {
		v, _, err := s.read(ctx, r, name, 0, true)
		switch {
		case errors.Is(err, ErrNotGranted), errors.Is(err, ErrNotFound):
			return nil, fmt.Errorf("%w: %w", err, egress.ErrSecretNotGranted)
		case err != nil:
			return nil, fmt.Errorf("%w: %w", err, errUnavailable)
		}
		return v, nil
	})
	return grants, lookup, nil
}

// audit records e under a lease shared by the day's events.
func (s *Store) audit(ctx context.Context, e Event) error {
	lease, err := s.dayLease(ctx, e.At)
	if err != nil {
		return err
	}
	b, err := json.Marshal(e)
	if err != nil {
		return err
	}
	suffix := make([]byte, 4)
	rand.Read(suffix)
	key := fmt.Sprintf("%s%020d-%s", s.userAudit(e.Owner), e.At.UnixNano(), hex.EncodeToString(suffix))
	_, err = s.cli.Put(ctx, key, string(b), clientv3.WithLease(lease))
	return err
}

func (s *Store) dayLease(ctx context.Context, at time.Time) (clientv3.LeaseID, error) {
	day := at.Unix() / 86400
	s.mu.Lock()
	defer s.mu.Unlock()
	if id, ok := s.leases[day]; ok {
		return id, nil
	}
	// The lease outlives the day's last event by AuditRetention.
	ttl := int64((AuditRetention + 24*time.Hour) / time.Second)
	resp, err := s.cli.Grant(ctx, ttl)
	if err != nil {
		return 0, err
	}
	for d := range s.leases {
		if d < day {
			delete(s.leases, d)
		}
	}
	s.leases[day] = resp.ID
	return resp.ID, nil
}

// Audit returns the owner's most recent read events, newest first, at
// most limit of them; only those of secret if it is not empty.
func (s *Store) Audit(ctx context.Context, owner, secret string, limit int64) ([]Event, error) {
	if err := names.User(owner); err != nil {
		return nil, err
	}
	if secret != "" {
		if err := names.Secret(secret); err != nil {
			return nil, err
		}
	}
	prefix := s.userAudit(owner)
	end := clientv3.GetPrefixRangeEnd(prefix)
	var out []Event
	for int64(len(out)) < limit {
		page := limit - int64(len(out))
		if secret != "" {
			page = max(page, 256)
		}
		resp, err := s.cli.Get(ctx, prefix, clientv3.WithRange(end),
			clientv3.WithSort(clientv3.SortByKey, clientv3.SortDescend), clientv3.WithLimit(page))
		if err != nil {
			return nil, err
		}
		for _, kv := range resp.Kvs {
			var e Event
			if json.Unmarshal(kv.Value, &e) == nil && (secret == "" || e.Secret == secret) && int64(len(out)) < limit {
				out = append(out, e)
			}
		}
		if !resp.More || len(resp.Kvs) == 0 {
			break
		}
		end = string(resp.Kvs[len(resp.Kvs)-1].Key) // exclusive: the next page is older
	}
	return out, nil
}

// RewrapKeys wraps every secret version's data key under the ring's
// current master key (after keyring.Rotate), without touching the values.
// It returns how many keys it rewrapped.
func (s *Store) RewrapKeys(ctx context.Context) (int, error) {
	resp, err := s.cli.Get(ctx, s.prefix+"secrets/", clientv3.WithPrefix(), clientv3.WithKeysOnly())
	if err != nil {
		return 0, err
	}
	n := 0
	for _, kv := range resp.Kvs {
		owner, name, ok := strings.Cut(strings.TrimPrefix(string(kv.Key), s.prefix+"secrets/"), "/")
		if !ok {
			continue
		}
		changedHere := 0
		err := s.update(ctx, owner, name, func(rec *record) (*record, error) {
			if rec == nil {
				return nil, errGone
			}
			changedHere = 0
			for i, v := range rec.Versions {
				out, changed, err := s.ring.Rewrap(v.Key, wrapContext(owner, name, v.Version))
				if err != nil {
					return nil, fmt.Errorf("secret %s/%s version %d: %w", owner, name, v.Version, err)
				}
				if changed {
					rec.Versions[i].Key = out
					changedHere++
				}
			}
			return rec, nil
		})
		switch {
		case err == nil:
			n += changedHere
		case !errors.Is(err, errGone):
			return n, err
		}
	}
	return n, nil
}

// errUnavailable is the kind of a failed lookup for the egress proxy: the
// control plane's or the key file's, not the request's.
var errUnavailable = serving.NewError(serving.KindUnavailable, "secrets unavailable")

// errGone stops a rewrap of a secret deleted meanwhile.
var errGone = errors.New("deleted meanwhile")
