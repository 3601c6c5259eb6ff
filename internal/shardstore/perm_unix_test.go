//go:build unix

package shardstore

import (
	"io/fs"
	"os"
	"path/filepath"
	"syscall"
	"testing"
)

// TestOwnerOnly checks that what the store creates is owner-only with a
// umask that takes nothing away (0), and that a store made with looser
// modes is closed off when it opens.
func TestOwnerOnly(t *testing.T) {
	old := syscall.Umask(0)
	t.Cleanup(func() { syscall.Umask(old) })

	for _, tc := range []struct {
		name  string
		setup func(dir string) error
	}{
		{"new directory", func(string) error { return nil }},
		{"store made with 0755", func(dir string) error { return os.MkdirAll(filepath.Join(dir, shardsDir), 0o755) }},
	} {
		t.Run(tc.name, func(t *testing.T) {
			dir := filepath.Join(t.TempDir(), "worker")
			if err := tc.setup(dir); err != nil {
				t.Fatal(err)
			}
			s, err := Open(DefaultConfig(dir))
			if err != nil {
				t.Fatal(err)
			}
			defer s.Close()
			for i := range 3 {
				put(t, s, key("f", int64(i), i), payload(uint64(i), 100))
			}
			checked := 0
			root := filepath.Join(dir, shardsDir)
			err = filepath.WalkDir(root, func(p string, d fs.DirEntry, err error) error {
				if err != nil {
					return err
				}
				st, err := os.Stat(p)
				if err != nil {
					return err
				}
				want := fs.FileMode(0o600)
				if st.IsDir() {
					want = 0o700
				}
				if got := st.Mode().Perm(); got != want {
					t.Errorf("%s: mode %#o, want %#o", p, got, want)
				}
				checked++
				return nil
			})
			if err != nil {
				t.Fatal(err)
			}
			if checked < 5 { // the root, at least one directory per level, the shards
				t.Fatalf("checked %d paths: the walk found too little", checked)
			}
			if st, err := os.Stat(filepath.Join(dir, "LOCK")); err != nil || st.Mode().Perm() != 0o600 {
				t.Errorf("LOCK: %v, %v: want mode 0600", st.Mode(), err)
			}
		})
	}
}
