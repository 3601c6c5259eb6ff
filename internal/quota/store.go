package quota

import (
	"context"
	"errors"
	"fmt"
	"sort"
	"strings"
	"sync"
	"time"

	clientv3 "go.etcd.io/etcd/client/v3"
	"google.golang.org/protobuf/proto"

	v1 "github.com/hivemind/taskworker/api/taskworker/v1"
	"github.com/hivemind/taskworker/internal/etcdwatch"
	"github.com/hivemind/taskworker/internal/names"
)

// Builtin holds the defaults of a network whose admin has set none: loose
// enough for real use, tight enough that one user cannot fill etcd with
// modules or tasks. Calls are not bounded by default: workers share their
// slots fairly between users (internal/childproc) whatever one user sends.
var Builtin = Limits{
	Modules:      100,
	ModuleBytes:  256 << 20,
	Tasks:        1000,
	KeepVersions: DefaultKeepVersions,
}

// Store keeps the quotas in etcd, under prefix+"quota/", and a view of them
// in memory that a watch keeps current, so that checking a quota on every
// call costs no etcd read.
type Store struct {
	cli    *clientv3.Client
	prefix string

	mu       sync.RWMutex
	defaults *v1.Quota
	users    map[string]*v1.Quota
	loaded   bool
	// The limits in force, worked out when the quotas change rather than
	// on every call: for users without quotas of their own (forDefaults),
	// and for each user with some (forUser).
	forDefaults Limits
	forUser     map[string]Limits
}

// New returns a store over cli; Run keeps its view current.
func New(cli *clientv3.Client, prefix string) *Store {
	return &Store{cli: cli, prefix: prefix + "quota/", defaults: &v1.Quota{}, users: map[string]*v1.Quota{}}
}

func (s *Store) defaultsKey() string        { return s.prefix + "defaults" }
func (s *Store) userKey(user string) string { return s.prefix + "users/" + user }

// Run watches the quotas until ctx ends; ready is closed once they are
// loaded.
func (s *Store) Run(ctx context.Context, ready chan<- struct{}) {
	etcdwatch.Prefix(ctx, s.cli, s.prefix, s.apply, ready)
}

func (s *Store) apply(kvs []etcdwatch.KV, reset bool, _ int64) {
	s.mu.Lock()
	defer s.mu.Unlock()
	if reset {
		s.defaults, s.users = &v1.Quota{}, map[string]*v1.Quota{}
	}
	s.loaded = true
	for _, e := range kvs {
		q := &v1.Quota{}
		if e.Value != nil && proto.Unmarshal(e.Value, q) != nil {
			continue // not ours to repair; Set overwrites it
		}
		switch {
		case e.Key == s.defaultsKey():
			if e.Value == nil {
				q = &v1.Quota{}
			}
			s.defaults = q
		case strings.HasPrefix(e.Key, s.prefix+"users/"):
			user := strings.TrimPrefix(e.Key, s.prefix+"users/")
			if e.Value == nil {
				delete(s.users, user)
			} else {
				s.users[user] = q
			}
		}
	}
	s.forDefaults = FromProto(Effective(nil, s.defaults))
	s.forUser = make(map[string]Limits, len(s.users))
	for user, own := range s.users {
		s.forUser[user] = FromProto(Effective(own, s.defaults))
	}
}

// Limits returns the quotas in force for user: their own, the network's
// defaults for the fields they have none of, and Builtin for the rest.
// Before Run has loaded the quotas it reads them from etcd.
func (s *Store) Limits(ctx context.Context, user string) (Limits, error) {
	s.mu.RLock()
	if s.loaded {
		l, ok := s.forUser[user]
		if !ok {
			l = s.forDefaults
		}
		s.mu.RUnlock()
		return l, nil
	}
	s.mu.RUnlock()
	own, defaults, err := s.read(ctx, user)
	if err != nil {
		return Limits{}, err
	}
	return FromProto(Effective(own, defaults)), nil
}

func (s *Store) read(ctx context.Context, user string) (own, defaults *v1.Quota, err error) {
	resp, err := s.cli.Txn(ctx).Then(clientv3.OpGet(s.userKey(user)), clientv3.OpGet(s.defaultsKey())).Commit()
	if err != nil {
		return nil, nil, fmt.Errorf("reading quotas from etcd: %w", err)
	}
	own, defaults = &v1.Quota{}, &v1.Quota{}
	for i, q := range []*v1.Quota{own, defaults} {
		if kvs := resp.Responses[i].GetResponseRange().Kvs; len(kvs) > 0 {
			if err := proto.Unmarshal(kvs[0].Value, q); err != nil {
				return nil, nil, fmt.Errorf("quota record %s is damaged: %w", kvs[0].Key, err)
			}
		}
	}
	return own, defaults, nil
}

// Get returns user's own quotas (fields they have none of are unset) and
// the ones in force.
func (s *Store) Get(ctx context.Context, user string) (own, effective *v1.Quota, err error) {
	if err := names.User(user); err != nil {
		return nil, nil, invalidf("user: %w", err)
	}
	own, defaults, err := s.read(ctx, user)
	if err != nil {
		return nil, nil, err
	}
	return own, Effective(own, defaults), nil
}

// ErrInvalid marks a request that can never succeed: a bad user name or a
// negative quota.
var ErrInvalid = errors.New("invalid quota request")

// invalid marks err as ErrInvalid without changing its text.
type invalid struct{ error }

func (e invalid) Unwrap() []error { return []error{e.error, ErrInvalid} }

func invalidf(format string, args ...any) error { return invalid{fmt.Errorf(format, args...)} }

// Set changes the fields set in change, for user, or for the defaults when
// user is empty. With reset, the user's own quotas are forgotten first. It
// returns the quotas now in force for user (for the defaults, the defaults
// over Builtin).
func (s *Store) Set(ctx context.Context, user string, change *v1.Quota, reset bool) (*v1.Quota, error) {
	if err := Check(change); err != nil {
		return nil, err
	}
	key := s.defaultsKey()
	if user != "" {
		if err := names.User(user); err != nil {
			return nil, invalidf("user: %w", err)
		}
		key = s.userKey(user)
	}
	for {
		resp, err := s.cli.Txn(ctx).Then(clientv3.OpGet(key), clientv3.OpGet(s.defaultsKey())).Commit()
		if err != nil {
			return nil, fmt.Errorf("reading quotas from etcd: %w", err)
		}
		cur, defaults := &v1.Quota{}, &v1.Quota{}
		var rev int64
		if kvs := resp.Responses[0].GetResponseRange().Kvs; len(kvs) > 0 {
			rev = kvs[0].ModRevision
			if !reset {
				_ = proto.Unmarshal(kvs[0].Value, cur) // a damaged record is replaced
			}
		}
		if kvs := resp.Responses[1].GetResponseRange().Kvs; len(kvs) > 0 {
			_ = proto.Unmarshal(kvs[0].Value, defaults)
		}
		proto.Merge(cur, change)
		val, err := proto.Marshal(cur)
		if err != nil {
			return nil, err
		}
		var put clientv3.Op
		if user != "" && isEmpty(cur) {
			put = clientv3.OpDelete(key)
		} else {
			put = clientv3.OpPut(key, string(val))
		}
		tx, err := s.cli.Txn(ctx).If(clientv3.Compare(clientv3.ModRevision(key), "=", rev)).Then(put).Commit()
		if err != nil {
			return nil, fmt.Errorf("writing quotas to etcd: %w", err)
		}
		if !tx.Succeeded {
			continue // changed meanwhile: merge again
		}
		if user == "" {
			return Effective(nil, cur), nil
		}
		return Effective(cur, defaults), nil
	}
}

// List returns the defaults and every user's own quotas, by user name.
func (s *Store) List(ctx context.Context) (defaults *v1.Quota, users []*v1.UserQuota, err error) {
	resp, err := s.cli.Get(ctx, s.prefix, clientv3.WithPrefix())
	if err != nil {
		return nil, nil, fmt.Errorf("reading quotas from etcd: %w", err)
	}
	defaults = &v1.Quota{}
	for _, kv := range resp.Kvs {
		q := &v1.Quota{}
		if proto.Unmarshal(kv.Value, q) != nil {
			continue
		}
		if string(kv.Key) == s.defaultsKey() {
			defaults = q
		} else if u, ok := strings.CutPrefix(string(kv.Key), s.prefix+"users/"); ok {
			users = append(users, &v1.UserQuota{User: u, Own: q})
		}
	}
	sort.Slice(users, func(i, j int) bool { return users[i].User < users[j].User })
	return defaults, users, nil
}

// Check refuses negative quotas, naming the field.
func Check(q *v1.Quota) error {
	for _, f := range fields(q) {
		if f.v != nil && *f.v < 0 {
			return invalidf("%s quota %d is negative; give 0 for no limit", f.name, *f.v)
		}
	}
	return nil
}

type field struct {
	name string
	v    *int64
}

func fields(q *v1.Quota) []field {
	return []field{
		{"storage", q.StorageBytes}, {"modules", q.Modules}, {"module bytes", q.ModuleBytes},
		{"calls", q.Calls}, {"sandbox processes", q.SandboxProcesses}, {"tasks", q.Tasks},
		{"keep versions", q.KeepVersions}, {"keep for", q.KeepForMs},
	}
}

func isEmpty(q *v1.Quota) bool {
	for _, f := range fields(q) {
		if f.v != nil {
			return false
		}
	}
	return true
}

// Effective returns own's fields, defaults' for those own lacks, and
// Builtin's for the rest: every field set.
func Effective(own, defaults *v1.Quota) *v1.Quota {
	out := ToProto(Builtin)
	if defaults != nil {
		proto.Merge(out, defaults)
	}
	if own != nil {
		proto.Merge(out, own)
	}
	return out
}

// ToProto returns l with every field set.
func ToProto(l Limits) *v1.Quota {
	return &v1.Quota{
		StorageBytes: proto.Int64(l.StorageBytes), Modules: proto.Int64(l.Modules), ModuleBytes: proto.Int64(l.ModuleBytes),
		Calls: proto.Int64(l.Calls), SandboxProcesses: proto.Int64(l.SandboxProcesses), Tasks: proto.Int64(l.Tasks),
		KeepVersions: proto.Int64(l.KeepVersions), KeepForMs: proto.Int64(l.KeepFor.Milliseconds()),
	}
}

// FromProto reads q's fields; unset ones are 0.
func FromProto(q *v1.Quota) Limits {
	return Limits{
		StorageBytes: q.GetStorageBytes(), Modules: q.GetModules(), ModuleBytes: q.GetModuleBytes(),
		Calls: q.GetCalls(), SandboxProcesses: q.GetSandboxProcesses(), Tasks: q.GetTasks(),
		KeepVersions: q.GetKeepVersions(), KeepFor: time.Duration(q.GetKeepForMs()) * time.Millisecond,
	}
}
