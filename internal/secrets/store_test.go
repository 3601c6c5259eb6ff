package secrets_test

import (
	"bytes"
	"context"
	"errors"
	"path/filepath"
	"strings"
	"testing"
	"time"

	clientv3 "go.etcd.io/etcd/client/v3"

	"github.com/hivemind/taskworker/internal/egress"
	"github.com/hivemind/taskworker/internal/etcdserver"
	"github.com/hivemind/taskworker/internal/keyring"
	"github.com/hivemind/taskworker/internal/names"
	"github.com/hivemind/taskworker/internal/secrets"
)

// harness is a real etcd and a store over it.
type harness struct {
	cli   *clientv3.Client
	ring  *keyring.Keyring
	store *secrets.Store
}

func newHarness(t *testing.T) *harness {
	t.Helper()
	ctx := context.Background()
	cfg := etcdserver.DefaultConfig(t.TempDir())
	cfg.TickMs, cfg.ElectionMs = 10, 100
	srv, err := etcdserver.Start(ctx, cfg)
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(srv.Close)
	cli, err := clientv3.New(clientv3.Config{Endpoints: srv.Endpoints(), DialTimeout: 5 * time.Second})
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { cli.Close() })
	ring, err := keyring.Open(filepath.Join(t.TempDir(), keyring.FileName))
	if err != nil {
		t.Fatal(err)
	}
	h := &harness{cli: cli, ring: ring, store: secrets.New(cli, "/tw/", ring)}
	t.Cleanup(func() { h.checkNoValueInEtcd(t) })
	return h
}

// values are the secret values the tests store; none may appear in etcd.
var values = [][]byte{[]byte("sk_live_first_value"), []byte("sk_live_second_value"), []byte("bob's own key")}

// checkNoValueInEtcd reads every key and value in etcd and fails if a
// secret's value is there in the clear.
func (h *harness) checkNoValueInEtcd(t *testing.T) {
	resp, err := h.cli.Get(context.Background(), "", clientv3.WithFromKey())
	if err != nil {
		t.Fatal(err)
	}
	for _, kv := range resp.Kvs {
		for _, v := range values {
			if bytes.Contains(kv.Value, v) || bytes.Contains(kv.Key, v) {
				t.Errorf("etcd key %s holds a secret's value in the clear", kv.Key)
			}
		}
	}
}

func TestGrantsDecideWhoReads(t *testing.T) {
	h := newHarness(t)
	ctx := context.Background()
	s := h.store
	if v, err := s.Put(ctx, "alice", "API_KEY", values[0]); err != nil || v != 1 {
		t.Fatalf("Put: v%d, %v", v, err)
	}
	if _, err := s.Put(ctx, "bob", "API_KEY", values[2]); err != nil {
		t.Fatal(err)
	}
	if _, err := s.Grant(ctx, "alice", "API_KEY", "fetcher", nil); err != nil {
		t.Fatal(err)
	}
	tests := []struct {
		name    string
		reader  secrets.Reader
		secret  string
		want    []byte
		wantErr error
	}{
		{"the granted function", secrets.Reader{Owner: "alice", Function: "fetcher", Caller: "alice"}, "API_KEY", values[0], nil},
		{"another function of the owner", secrets.Reader{Owner: "alice", Function: "other"}, "API_KEY", nil, secrets.ErrNotGranted},
		{"a function of the same name of another owner", secrets.Reader{Owner: "bob", Function: "fetcher"}, "API_KEY", nil, secrets.ErrNotGranted},
		{"a secret that does not exist", secrets.Reader{Owner: "alice", Function: "fetcher"}, "NOPE", nil, secrets.ErrNotFound},
		{"a name that is a path", secrets.Reader{Owner: "alice", Function: "fetcher"}, "../bob/API_KEY", nil, names.ErrInvalid},
		{"an owner that is a path", secrets.Reader{Owner: "alice/../bob", Function: "fetcher"}, "API_KEY", nil, names.ErrInvalid},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			got, _, err := s.Read(ctx, tt.reader, tt.secret, 0)
			if !errors.Is(err, tt.wantErr) {
				t.Fatalf("Read: %v, want %v", err, tt.wantErr)
			}
			if !bytes.Equal(got, tt.want) {
				t.Fatalf("Read returned %d bytes, want %d", len(got), len(tt.want))
			}
			if err != nil {
				for _, v := range values {
					if strings.Contains(err.Error(), string(v)) {
						t.Fatal("the error shows a secret's value")
					}
				}
			}
		})
	}
	if _, err := s.Revoke(ctx, "alice", "API_KEY", "fetcher"); err != nil {
		t.Fatal(err)
	}
	if _, _, err := s.Read(ctx, secrets.Reader{Owner: "alice", Function: "fetcher"}, "API_KEY", 0); !errors.Is(err, secrets.ErrNotGranted) {
		t.Fatalf("Read after Revoke: %v, want ErrNotGranted", err)
	}
}

func TestVersionsListAuditDelete(t *testing.T) {
	h := newHarness(t)
	ctx := context.Background()
	s := h.store
	s.Put(ctx, "alice", "K", values[0])
	if v, _ := s.Put(ctx, "alice", "K", values[1]); v != 2 {
		t.Fatalf("second Put made v%d", v)
	}
	s.Grant(ctx, "alice", "K", "f", nil)
	r := secrets.Reader{Owner: "alice", Function: "f", Caller: "carol"}
	for _, tt := range []struct {
		want  int64
		value []byte
	}{{0, values[1]}, {1, values[0]}, {2, values[1]}} {
		got, v, err := s.Read(ctx, r, "K", tt.want)
		if err != nil || !bytes.Equal(got, tt.value) {
			t.Fatalf("Read version %d: v%d, %v", tt.want, v, err)
		}
	}
	if _, _, err := s.Read(ctx, r, "K", 9); !errors.Is(err, secrets.ErrNotFound) {
		t.Fatalf("Read of a version never made: %v", err)
	}
	list, err := s.List(ctx, "alice")
	if err != nil || len(list) != 1 || list[0].Name != "K" || len(list[0].Versions) != 2 || list[0].Grants[0].Function != "f" {
		t.Fatalf("List: %+v, %v", list, err)
	}
	events, err := s.Audit(ctx, "alice", "", 10)
	if err != nil || len(events) != 3 {
		t.Fatalf("Audit: %d events, %v; want 3 reads", len(events), err)
	}
	if e := events[0]; e.Secret != "K" || e.Version != 2 || e.Function != "f" || e.Caller != "carol" {
		t.Fatalf("newest event %+v, want the read of K v2 by f for carol", e)
	}
	if bob, _ := s.Audit(ctx, "bob", "", 10); len(bob) != 0 {
		t.Fatalf("bob sees %d of alice's events", len(bob))
	}
	for range secrets.MaxVersions + 2 {
		s.Put(ctx, "alice", "K", values[1])
	}
	if list, _ := s.List(ctx, "alice"); len(list[0].Versions) != secrets.MaxVersions {
		t.Fatalf("%d versions kept, want %d", len(list[0].Versions), secrets.MaxVersions)
	}
	if _, err := s.Put(ctx, "alice", "BIG", make([]byte, secrets.MaxValueBytes+1)); !errors.Is(err, secrets.ErrTooLarge) {
		t.Fatalf("Put of a value too large: %v", err)
	}
	if err := s.Delete(ctx, "alice", "K"); err != nil {
		t.Fatal(err)
	}
	if err := s.Delete(ctx, "alice", "K"); !errors.Is(err, secrets.ErrNotFound) {
		t.Fatalf("second Delete: %v", err)
	}
	if _, _, err := s.Read(ctx, r, "K", 0); !errors.Is(err, secrets.ErrNotFound) {
		t.Fatalf("Read after Delete: %v", err)
	}
}

// After the master key rotates, Rewrap moves every data key to it, the old
// master key can go, and every secret still reads.
func TestRewrapAfterRotation(t *testing.T) {
	h := newHarness(t)
	ctx := context.Background()
	s := h.store
	s.Put(ctx, "alice", "A", values[0])
	s.Put(ctx, "alice", "A", values[1])
	s.Put(ctx, "bob", "B", values[2])
	s.Grant(ctx, "alice", "A", "f", nil)
	s.Grant(ctx, "bob", "B", "f", nil)
	old := h.ring.Current()
	if _, err := h.ring.Rotate(); err != nil {
		t.Fatal(err)
	}
	n, err := s.RewrapKeys(ctx)
	if err != nil || n != 3 {
		t.Fatalf("Rewrap: %d keys, %v; want 3", n, err)
	}
	if n, _ := s.RewrapKeys(ctx); n != 0 {
		t.Fatalf("a second Rewrap rewrapped %d keys", n)
	}
	if err := h.ring.Retire(old); err != nil {
		t.Fatal(err)
	}
	for _, tt := range []struct {
		owner, name string
		version     int64
		want        []byte
	}{{"alice", "A", 1, values[0]}, {"alice", "A", 2, values[1]}, {"bob", "B", 0, values[2]}} {
		got, _, err := s.Read(ctx, secrets.Reader{Owner: tt.owner, Function: "f"}, tt.name, tt.version)
		if err != nil || !bytes.Equal(got, tt.want) {
			t.Fatalf("%s/%s v%d after rewrap: %v", tt.owner, tt.name, tt.version, err)
		}
	}
}

// A version's sealed value and wrapped key copied under another secret's
// name do not open there.
func TestCiphertextIsBoundToItsSecret(t *testing.T) {
	h := newHarness(t)
	ctx := context.Background()
	s := h.store
	s.Put(ctx, "bob", "B", values[2])
	s.Put(ctx, "eve", "E", []byte("x"))
	s.Grant(ctx, "eve", "E", "f", nil)
	resp, err := h.cli.Get(ctx, "/tw/secrets/bob/B")
	if err != nil || len(resp.Kvs) != 1 {
		t.Fatal(err)
	}
	if _, err := h.cli.Put(ctx, "/tw/secrets/eve/E", strings.Replace(string(resp.Kvs[0].Value), `"grants"`, `"x"`, 1)); err != nil {
		t.Fatal(err)
	}
	s.Grant(ctx, "eve", "E", "f", nil)
	if got, _, err := s.Read(ctx, secrets.Reader{Owner: "eve", Function: "f"}, "E", 0); !errors.Is(err, keyring.ErrCorrupt) {
		t.Fatalf("Read of bob's ciphertext under eve's name: %q, %v; want ErrCorrupt", got, err)
	}
}

// A grant with hosts is for injection only: the function cannot read the
// value, the egress proxy gets it only toward those hosts, and each such
// read is recorded as injected.
func TestGrantWithHosts(t *testing.T) {
	h := newHarness(t)
	ctx := context.Background()
	s := h.store
	s.Put(ctx, "alice", "TOKEN", values[0])
	s.Put(ctx, "alice", "OPEN", values[1])
	info, err := s.Grant(ctx, "alice", "TOKEN", "f", []string{"https://API.example.com:443/", "https://api.example.com"})
	if err != nil || len(info.Grants) != 1 || strings.Join(info.Grants[0].Hosts, ",") != "https://api.example.com" {
		t.Fatalf("Grant: %+v, %v; want one canonical host", info, err)
	}
	if _, err := s.Grant(ctx, "alice", "OPEN", "f", nil); err != nil {
		t.Fatal(err)
	}
	if _, err := s.Grant(ctx, "alice", "OPEN", "g", []string{"api.example.com"}); !errors.Is(err, egress.ErrInvalidRule) {
		t.Fatalf("Grant with a host rule without a scheme: %v, want ErrInvalidRule", err)
	}
	r := secrets.Reader{Owner: "alice", Function: "f", Caller: "carol"}
	if _, _, err := s.Read(ctx, r, "TOKEN", 0); !errors.Is(err, secrets.ErrNotGranted) || !strings.Contains(err.Error(), "https://api.example.com") {
		t.Fatalf("direct Read under a grant with hosts: %v, want ErrNotGranted naming the host", err)
	}
	own, _ := egress.ParseAllowlist([]string{"https://own.example.net"})
	grants, lookup, err := s.EgressGrants(ctx, "alice", "f", "carol", own)
	if err != nil || len(grants) != 2 {
		t.Fatalf("EgressGrants: %v, %v; want TOKEN and OPEN", grants, err)
	}
	if got := grants["TOKEN"].String(); got != "https://api.example.com" {
		t.Errorf("TOKEN may go to %s, want its grant's host", got)
	}
	if got := grants["OPEN"].String(); got != "https://own.example.net" {
		t.Errorf("OPEN may go to %s, want the function's own rules", got)
	}
	v, err := lookup.Secret(ctx, "TOKEN")
	if err != nil || !bytes.Equal(v, values[0]) {
		t.Fatalf("injection lookup: %v", err)
	}
	events, _ := s.Audit(ctx, "alice", "TOKEN", 10)
	if len(events) != 1 || !events[0].Injected || events[0].Caller != "carol" {
		t.Fatalf("audit of TOKEN: %+v, want one injected read for carol", events)
	}
	if other, _, _ := s.EgressGrants(ctx, "alice", "g", "", own); len(other) != 0 {
		t.Fatalf("an ungranted function gets %v", other)
	}
	if _, err := s.Revoke(ctx, "alice", "TOKEN", "nobody"); !errors.Is(err, secrets.ErrNoGrant) || !strings.Contains(err.Error(), "granted to: f") {
		t.Fatalf("Revoke of a grant never made: %v, want ErrNoGrant naming f", err)
	}
	if _, err := s.Revoke(ctx, "alice", "TOKEN", "f"); err != nil {
		t.Fatal(err)
	}
	if _, err := lookup.Secret(ctx, "TOKEN"); !errors.Is(err, secrets.ErrNotGranted) {
		t.Fatalf("injection lookup after Revoke: %v, want ErrNotGranted", err)
	}
}

// Audit pages through older events to find those of one secret.
func TestAuditOfOneSecret(t *testing.T) {
	h := newHarness(t)
	ctx := context.Background()
	s := h.store
	s.Put(ctx, "alice", "A", values[0])
	s.Put(ctx, "alice", "B", values[1])
	s.Grant(ctx, "alice", "A", "f", nil)
	s.Grant(ctx, "alice", "B", "f", nil)
	r := secrets.Reader{Owner: "alice", Function: "f"}
	s.Read(ctx, r, "A", 0)
	for range 300 {
		s.Read(ctx, r, "B", 0)
	}
	if events, err := s.Audit(ctx, "alice", "A", 5); err != nil || len(events) != 1 || events[0].Secret != "A" {
		t.Fatalf("Audit of A: %+v, %v", events, err)
	}
	if events, _ := s.Audit(ctx, "alice", "", 7); len(events) != 7 || events[0].Secret != "B" {
		t.Fatalf("Audit of all, 7: %d events", len(events))
	}
}
