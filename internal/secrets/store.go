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

	"github.com/hivemind/taskworker/internal/keyring"
	"github.com/hivemind/taskworker/internal/names"
)

// Limits.
const (
	MaxValueBytes  = 64 << 10
	MaxVersions    = 10
	AuditRetention = 30 * 24 * time.Hour
)

// Errors a caller maps to statuses: ErrNotFound to NotFound, ErrNotGranted
// to PermissionDenied, ErrTooLarge to InvalidArgument, names.ErrInvalid to
// InvalidArgument. Anything else is the control plane's failure.
var (
	ErrNotFound   = errors.New("no such secret")
	ErrNotGranted = errors.New("the function has no grant for the secret")
	ErrTooLarge   = fmt.Errorf("a secret's value is at most %d bytes", MaxValueBytes)
)

// record is what etcd holds under secrets/<owner>/<name>.
type record struct {
	Versions  []version `json:"versions"` // oldest first
	Grants    []string  `json:"grants,omitempty"`
	CreatedMs int64     `json:"created_ms"`
	UpdatedMs int64     `json:"updated_ms"`
}

type version struct {
	Version   int64  `json:"v"`
	Key       string `json:"key"`   // the data key, wrapped
	Value     []byte `json:"value"` // sealed
	CreatedMs int64  `json:"created_ms"`
}

// Info describes a secret, never its value.
type Info struct {
	Name      string
	Versions  []int64 // kept versions, oldest first
	Grants    []string
	CreatedAt time.Time
	UpdatedAt time.Time
}

// Event is one read of a secret.
type Event struct {
	Owner    string    `json:"owner"`
	Secret   string    `json:"secret"`
	Version  int64     `json:"version"`
	Function string    `json:"function"`
	Caller   string    `json:"caller,omitempty"` // who called the function
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

// Grant lets function (of the same owner) read the secret.
func (s *Store) Grant(ctx context.Context, owner, name, function string) error {
	return s.grant(ctx, owner, name, function, true)
}

// Revoke takes function's grant away; reads already returned stay returned.
func (s *Store) Revoke(ctx context.Context, owner, name, function string) error {
	return s.grant(ctx, owner, name, function, false)
}

func (s *Store) grant(ctx context.Context, owner, name, function string, on bool) error {
	if err := check(owner, name); err != nil {
		return err
	}
	if err := names.Function(function); err != nil {
		return err
	}
	return s.update(ctx, owner, name, func(rec *record) (*record, error) {
		if rec == nil {
			return nil, fmt.Errorf("secret %s: %w", name, ErrNotFound)
		}
		i, found := slices.BinarySearch(rec.Grants, function)
		switch {
		case on && !found:
			rec.Grants = slices.Insert(rec.Grants, i, function)
		case !on && found:
			rec.Grants = slices.Delete(rec.Grants, i, i+1)
		}
		return rec, nil
	})
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
		info := Info{
			Name:      strings.TrimPrefix(string(kv.Key), s.userSecrets(owner)),
			Grants:    rec.Grants,
			CreatedAt: time.UnixMilli(rec.CreatedMs),
			UpdatedAt: time.UnixMilli(rec.UpdatedMs),
		}
		for _, v := range rec.Versions {
			info.Versions = append(info.Versions, v.Version)
		}
		out = append(out, info)
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

// Read returns a secret's value for r.Function, which must hold a grant:
// the latest version, or the one asked for (version > 0). The read is
// recorded before the value is returned.
func (s *Store) Read(ctx context.Context, r Reader, name string, want int64) ([]byte, int64, error) {
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
	if _, ok := slices.BinarySearch(rec.Grants, r.Function); !ok {
		return nil, 0, fmt.Errorf("function %s, secret %s: %w; grant it with `taskworker secret grant %s --function %s`", r.Function, name, ErrNotGranted, name, r.Function)
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
	if err := s.audit(ctx, Event{Owner: r.Owner, Secret: name, Version: v.Version, Function: r.Function, Caller: r.Caller, At: s.now()}); err != nil {
		return nil, 0, fmt.Errorf("recording the read of secret %s: %w", name, err)
	}
	return value, v.Version, nil
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
// most limit of them.
func (s *Store) Audit(ctx context.Context, owner string, limit int64) ([]Event, error) {
	if err := names.User(owner); err != nil {
		return nil, err
	}
	resp, err := s.cli.Get(ctx, s.userAudit(owner), clientv3.WithPrefix(),
		clientv3.WithSort(clientv3.SortByKey, clientv3.SortDescend), clientv3.WithLimit(limit))
	if err != nil {
		return nil, err
	}
	out := make([]Event, 0, len(resp.Kvs))
	for _, kv := range resp.Kvs {
		var e Event
		if json.Unmarshal(kv.Value, &e) == nil {
			out = append(out, e)
		}
	}
	return out, nil
}

// Rewrap wraps every secret version's data key under the ring's current
// master key (after keyring.Rotate), without touching the values. It
// returns how many keys it rewrapped.
func (s *Store) Rewrap(ctx context.Context) (int, error) {
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

// errGone stops a rewrap of a secret deleted meanwhile.
var errGone = errors.New("deleted meanwhile")
