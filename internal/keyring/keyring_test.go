package keyring_test

import (
	"bytes"
	"encoding/base64"
	"errors"
	"os"
	"path/filepath"
	"strings"
	"syscall"
	"testing"

	"github.com/hivemind/taskworker/internal/keyring"
)

func open(t *testing.T) *keyring.Keyring {
	t.Helper()
	k, err := keyring.Open(filepath.Join(t.TempDir(), keyring.FileName))
	if err != nil {
		t.Fatal(err)
	}
	return k
}

func TestKeyFileIsOwnerOnlyWhateverTheUmask(t *testing.T) {
	old := syscall.Umask(0)
	defer syscall.Umask(old)
	k := open(t)
	fi, err := os.Stat(k.Path())
	if err != nil {
		t.Fatal(err)
	}
	if fi.Mode().Perm() != 0o600 {
		t.Fatalf("key file mode %v, want 0600", fi.Mode().Perm())
	}
	if _, err := k.Rotate(); err != nil {
		t.Fatal(err)
	}
	if fi, _ := os.Stat(k.Path()); fi.Mode().Perm() != 0o600 {
		t.Fatalf("key file mode after rotation %v, want 0600", fi.Mode().Perm())
	}
}

func TestOpenRefusesAKeyFileOthersMayRead(t *testing.T) {
	k := open(t)
	if err := os.Chmod(k.Path(), 0o644); err != nil {
		t.Fatal(err)
	}
	_, err := keyring.Open(k.Path())
	if err == nil || !strings.Contains(err.Error(), "chmod 600") {
		t.Fatalf("Open of a 0644 key file: %v, want a refusal that says to chmod 600", err)
	}
}

func TestOpenRefusesADamagedKeyFile(t *testing.T) {
	for name, content := range map[string]string{
		"not JSON":          "{",
		"no current key":    `{"current":"a","keys":[]}`,
		"a short key":       `{"current":"a","keys":[{"id":"a","key":"AAAA"}]}`,
		"a colon in the id": `{"current":"a:b","keys":[{"id":"a:b","key":"` + strings.Repeat("A", 43) + `="}]}`,
		"the same id twice": `{"current":"a","keys":[{"id":"a","key":"` + strings.Repeat("A", 43) + `="},{"id":"a","key":"` + strings.Repeat("A", 43) + `="}]}`,
	} {
		t.Run(name, func(t *testing.T) {
			path := filepath.Join(t.TempDir(), keyring.FileName)
			if err := os.WriteFile(path, []byte(content), 0o600); err != nil {
				t.Fatal(err)
			}
			if _, err := keyring.Open(path); err == nil {
				t.Fatal("Open accepted it")
			}
		})
	}
}

func TestWrapUnwrap(t *testing.T) {
	k := open(t)
	d := keyring.NewDataKey()
	wrapped, err := k.Wrap(d, "file f1 v1")
	if err != nil {
		t.Fatal(err)
	}
	if strings.Contains(wrapped, string(d[:])) {
		t.Fatal("the wrapped key contains the key")
	}
	tamper := func(w string) string {
		i := strings.LastIndex(w, ":") + 1
		sealed, _ := base64.RawURLEncoding.DecodeString(w[i:])
		sealed[len(sealed)-1] ^= 1
		return w[:i] + base64.RawURLEncoding.EncodeToString(sealed)
	}
	tests := []struct {
		name     string
		wrapped  string
		context  string
		wantErr  error
		wantSame bool
	}{
		{"its own context", wrapped, "file f1 v1", nil, true},
		{"another file's context", wrapped, "file f2 v1", keyring.ErrCorrupt, false},
		{"tampered with", tamper(wrapped), "file f1 v1", keyring.ErrCorrupt, false},
		{"under an unknown master key", "tw1:000000000000:" + wrapped[strings.LastIndex(wrapped, ":")+1:], "file f1 v1", keyring.ErrUnknownMaster, false},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			got, err := k.Unwrap(tt.wrapped, tt.context)
			if !errors.Is(err, tt.wantErr) {
				t.Fatalf("Unwrap: %v, want %v", err, tt.wantErr)
			}
			if (got == d) != tt.wantSame {
				t.Fatalf("unwrapped the same key: %t, want %t", got == d, tt.wantSame)
			}
		})
	}
	if _, err := k.Unwrap("not a key", "x"); err == nil {
		t.Fatal("Unwrap accepted garbage")
	}
}

// After a rotation, old wrapped keys still open; Rewrap moves them to the
// new master key, after which the old one can be retired, and the key file
// read again holds the same keys.
func TestRotateRewrapRetire(t *testing.T) {
	k := open(t)
	first := k.Current()
	d := keyring.NewDataKey()
	old, _ := k.Wrap(d, "ctx")
	second, err := k.Rotate()
	if err != nil {
		t.Fatal(err)
	}
	if second == first || k.Current() != second {
		t.Fatalf("current %s after rotating from %s to %s", k.Current(), first, second)
	}
	if got, err := k.Unwrap(old, "ctx"); err != nil || got != d {
		t.Fatalf("the old wrapped key after rotation: %v", err)
	}
	if err := k.Retire(second); err == nil {
		t.Fatal("retired the current key")
	}
	rewrapped, changed, err := k.Rewrap(old, "ctx")
	if err != nil || !changed {
		t.Fatalf("Rewrap: changed %t, %v", changed, err)
	}
	if by, _ := keyring.WrappedBy(rewrapped); by != second {
		t.Fatalf("rewrapped by %s, want %s", by, second)
	}
	if same, changed, _ := k.Rewrap(rewrapped, "ctx"); changed || same != rewrapped {
		t.Fatal("Rewrap of a current key changed it")
	}
	if err := k.Retire(first); err != nil {
		t.Fatal(err)
	}
	if _, err := k.Unwrap(old, "ctx"); !errors.Is(err, keyring.ErrUnknownMaster) {
		t.Fatalf("a key wrapped by a retired master: %v, want ErrUnknownMaster", err)
	}
	again, err := keyring.Open(k.Path())
	if err != nil {
		t.Fatal(err)
	}
	if got, err := again.Unwrap(rewrapped, "ctx"); err != nil || got != d {
		t.Fatalf("after reopening: %v", err)
	}
	if ids := again.IDs(); len(ids) != 1 || ids[0] != second {
		t.Fatalf("reopened key file holds %v, want [%s]", ids, second)
	}
}

func TestSealer(t *testing.T) {
	d := keyring.NewDataKey()
	s, err := d.Sealer()
	if err != nil {
		t.Fatal(err)
	}
	plain := bytes.Repeat([]byte("block "), 1000)
	sealed := s.Seal(nil, 7, plain)
	if len(sealed) != len(plain)+keyring.Overhead {
		t.Fatalf("sealed %d bytes into %d, want %d more", len(plain), len(sealed), keyring.Overhead)
	}
	if bytes.Contains(sealed, []byte("block block")) {
		t.Fatal("the sealed block shows its plaintext")
	}
	if got, err := s.Open(nil, 7, sealed); err != nil || !bytes.Equal(got, plain) {
		t.Fatalf("Open: %v", err)
	}
	other, _ := keyring.NewDataKey().Sealer()
	flipped := bytes.Clone(sealed)
	flipped[10] ^= 1
	for name, open := range map[string]func() ([]byte, error){
		"another index":    func() ([]byte, error) { return s.Open(nil, 8, sealed) },
		"another data key": func() ([]byte, error) { return other.Open(nil, 7, sealed) },
		"a flipped bit":    func() ([]byte, error) { return s.Open(nil, 7, flipped) },
	} {
		if _, err := open(); !errors.Is(err, keyring.ErrCorrupt) {
			t.Errorf("%s: %v, want ErrCorrupt", name, err)
		}
	}
	if bytes.Equal(s.Seal(nil, 1, plain), s.Seal(nil, 2, plain)) {
		t.Fatal("two indexes seal the same block alike")
	}
}
