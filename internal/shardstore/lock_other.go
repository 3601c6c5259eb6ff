//go:build !(linux || darwin || freebsd || netbsd || openbsd || dragonfly)

package shardstore

import (
	"fmt"
	"os"
	"path/filepath"
)

// lockDir on systems without flock only creates DIR/LOCK: two processes on one store are not prevented
// there (see # Caveats in doc.go).
func lockDir(dir string) (*os.File, error) {
	f, err := os.OpenFile(filepath.Join(dir, "LOCK"), os.O_RDWR|os.O_CREATE, 0o600)
	if err != nil {
		return nil, fmt.Errorf("shardstore: %w", err)
	}
	return f, nil
}

func unlockDir(f *os.File) error { return f.Close() }
