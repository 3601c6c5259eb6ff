package keyring

import (
	"crypto/aes"
	"crypto/cipher"
	"crypto/rand"
	"encoding/base64"
	"encoding/hex"
	"encoding/json"
	"errors"
	"fmt"
	"os"
	"slices"
	"strings"
	"sync"
	"time"

	"github.com/hivemind/taskworker/internal/atomicfile"
)

// FileName is the key file's name in a pool's data directory.
const FileName = "master.keys"

// wrapPrefix starts every wrapped data key, naming the format.
const wrapPrefix = "tw1"

// Errors a caller may test for.
var (
	// ErrUnknownMaster: a data key was wrapped by a master key this key file
	// does not hold.
	ErrUnknownMaster = errors.New("wrapped by a master key this key file does not hold")
	// ErrCorrupt: a wrapped key or a sealed block failed authentication:
	// damaged, tampered with, or moved to another context or index.
	ErrCorrupt = errors.New("failed authentication: damaged, tampered with, or not from here")
)

// keyFile is the key file's content.
type keyFile struct {
	Current string      `json:"current"`
	Keys    []masterKey `json:"keys"`
}

type masterKey struct {
	ID        string `json:"id"`
	Key       []byte `json:"key"` // 32 bytes, base64 in JSON
	CreatedMs int64  `json:"created_ms"`
}

// Keyring holds the master keys of one key file.
type Keyring struct {
	path string

	mu      sync.RWMutex
	file    keyFile
	ciphers map[string]cipher.AEAD
}

// Open loads the key file at path, creating it with one new master key if
// it does not exist. It refuses a file that anyone but its owner may read
// or write.
func Open(path string) (*Keyring, error) {
	k := &Keyring{path: path}
	b, err := os.ReadFile(path)
	switch {
	case errors.Is(err, os.ErrNotExist):
		if _, err := k.rotate(); err != nil {
			return nil, err
		}
		return k, nil
	case err != nil:
		return nil, fmt.Errorf("reading the master key file: %w", err)
	}
	fi, err := os.Stat(path)
	if err != nil {
		return nil, err
	}
	if fi.Mode().Perm()&0o077 != 0 {
		return nil, fmt.Errorf("master key file %s has mode %v: others may read it; make it owner-only (chmod 600 %s)", path, fi.Mode().Perm(), path)
	}
	var f keyFile
	if err := json.Unmarshal(b, &f); err != nil {
		return nil, fmt.Errorf("master key file %s: %w", path, err)
	}
	if err := k.load(f); err != nil {
		return nil, fmt.Errorf("master key file %s: %w", path, err)
	}
	return k, nil
}

func (k *Keyring) load(f keyFile) error {
	ciphers := map[string]cipher.AEAD{}
	for _, m := range f.Keys {
		if len(m.Key) != 32 {
			return fmt.Errorf("master key %s has %d bytes, not 32", m.ID, len(m.Key))
		}
		if _, dup := ciphers[m.ID]; dup || m.ID == "" || strings.Contains(m.ID, ":") {
			return fmt.Errorf("master key id %q is empty, repeated or contains ':'", m.ID)
		}
		aead, err := newGCM(m.Key)
		if err != nil {
			return err
		}
		ciphers[m.ID] = aead
	}
	if _, ok := ciphers[f.Current]; !ok {
		return fmt.Errorf("the current master key %q is not in the file", f.Current)
	}
	k.mu.Lock()
	k.file, k.ciphers = f, ciphers
	k.mu.Unlock()
	return nil
}

// Path is the key file's path.
func (k *Keyring) Path() string { return k.path }

// Current is the id of the master key that wraps new data keys.
func (k *Keyring) Current() string {
	k.mu.RLock()
	defer k.mu.RUnlock()
	return k.file.Current
}

// IDs lists the master keys held, oldest first.
func (k *Keyring) IDs() []string {
	k.mu.RLock()
	defer k.mu.RUnlock()
	ids := make([]string, len(k.file.Keys))
	for i, m := range k.file.Keys {
		ids[i] = m.ID
	}
	return ids
}

// Rotate adds a new master key and makes it current, saving the key file.
// Older keys stay, so that what they wrapped still unwraps; rewrap it
// (Rewrap) and then Retire them.
func (k *Keyring) Rotate() (string, error) { return k.rotate() }

func (k *Keyring) rotate() (string, error) {
	key := make([]byte, 32)
	rand.Read(key)
	id := newID()
	k.mu.RLock()
	f := keyFile{Current: id, Keys: append(slices.Clone(k.file.Keys), masterKey{ID: id, Key: key, CreatedMs: time.Now().UnixMilli()})}
	k.mu.RUnlock()
	if err := k.save(f); err != nil {
		return "", err
	}
	return id, nil
}

// Retire removes master key id from the key file. What it wrapped no
// longer unwraps: rewrap everything first. The current key cannot be
// retired.
func (k *Keyring) Retire(id string) error {
	k.mu.RLock()
	f := keyFile{Current: k.file.Current}
	found := false
	for _, m := range k.file.Keys {
		if m.ID == id {
			found = true
			continue
		}
		f.Keys = append(f.Keys, m)
	}
	k.mu.RUnlock()
	switch {
	case !found:
		return fmt.Errorf("master key %s: %w", id, ErrUnknownMaster)
	case id == f.Current:
		return fmt.Errorf("master key %s is current; rotate first", id)
	}
	return k.save(f)
}

func (k *Keyring) save(f keyFile) error {
	b, err := json.MarshalIndent(f, "", "  ")
	if err != nil {
		return err
	}
	if err := k.load(f); err != nil {
		return err
	}
	if err := atomicfile.Write(k.path, append(b, '\n'), 0o600); err != nil {
		return fmt.Errorf("saving the master key file: %w", err)
	}
	// atomicfile honours the umask; a key file is owner-only whatever it is.
	return os.Chmod(k.path, 0o600)
}

func newID() string {
	b := make([]byte, 6)
	rand.Read(b)
	return hex.EncodeToString(b)
}

func newGCM(key []byte) (cipher.AEAD, error) {
	block, err := aes.NewCipher(key)
	if err != nil {
		return nil, err
	}
	return cipher.NewGCM(block)
}

// DataKey is the key of one file version or one secret.
type DataKey [32]byte

// NewDataKey returns a random data key.
func NewDataKey() DataKey {
	var d DataKey
	rand.Read(d[:])
	return d
}

// Wrap seals d under the current master key, bound to context: the same
// context must be given to Unwrap. The result is text, safe to store in
// JSON or etcd: "tw1:<master id>:<base64url of nonce and ciphertext>".
func (k *Keyring) Wrap(d DataKey, context string) (string, error) {
	k.mu.RLock()
	id := k.file.Current
	aead := k.ciphers[id]
	k.mu.RUnlock()
	nonce := make([]byte, aead.NonceSize())
	rand.Read(nonce)
	sealed := aead.Seal(nonce, nonce, d[:], aad(id, context))
	return wrapPrefix + ":" + id + ":" + base64.RawURLEncoding.EncodeToString(sealed), nil
}

// Unwrap opens a key Wrap made for context.
func (k *Keyring) Unwrap(wrapped, context string) (DataKey, error) {
	id, sealed, err := parse(wrapped)
	if err != nil {
		return DataKey{}, err
	}
	k.mu.RLock()
	aead, ok := k.ciphers[id]
	k.mu.RUnlock()
	if !ok {
		return DataKey{}, fmt.Errorf("data key of %s: master key %s: %w (%s); give this pool the key file that holds it", context, id, ErrUnknownMaster, k.path)
	}
	n := aead.NonceSize()
	if len(sealed) < n {
		return DataKey{}, fmt.Errorf("data key of %s: %w", context, ErrCorrupt)
	}
	plain, err := aead.Open(nil, sealed[:n], sealed[n:], aad(id, context))
	if err != nil || len(plain) != len(DataKey{}) {
		return DataKey{}, fmt.Errorf("data key of %s: %w", context, ErrCorrupt)
	}
	var d DataKey
	copy(d[:], plain)
	return d, nil
}

// Rewrap wraps under the current master key a data key that an older one
// wrapped. It reports whether anything changed: a key already wrapped by
// the current master key is returned as is.
func (k *Keyring) Rewrap(wrapped, context string) (string, bool, error) {
	id, _, err := parse(wrapped)
	if err != nil {
		return "", false, err
	}
	if id == k.Current() {
		return wrapped, false, nil
	}
	d, err := k.Unwrap(wrapped, context)
	if err != nil {
		return "", false, err
	}
	out, err := k.Wrap(d, context)
	return out, err == nil, err
}

// WrappedBy returns the id of the master key that wrapped a data key.
func WrappedBy(wrapped string) (string, error) {
	id, _, err := parse(wrapped)
	return id, err
}

func parse(wrapped string) (id string, sealed []byte, err error) {
	parts := strings.Split(wrapped, ":")
	if len(parts) != 3 || parts[0] != wrapPrefix {
		return "", nil, fmt.Errorf("not a wrapped data key (want %s:<master id>:<key>)", wrapPrefix)
	}
	sealed, err = base64.RawURLEncoding.DecodeString(parts[2])
	if err != nil {
		return "", nil, fmt.Errorf("wrapped data key: %w", ErrCorrupt)
	}
	return parts[1], sealed, nil
}

// aad binds a wrapped key to its master key and its context.
func aad(master, context string) []byte {
	return []byte(wrapPrefix + "\x00" + master + "\x00" + context)
}
