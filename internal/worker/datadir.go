package worker

import (
	"errors"
	"fmt"
	"io/fs"
	"os"
	"path/filepath"
	"regexp"
	"strings"

	"github.com/hivemind/taskworker/internal/atomicfile"
)

// networkFile, in a worker's data directory, holds the identity of the
// network the directory belongs to: the cluster ID of the first pool the
// worker registered with. See docs/RATIONALE.md, "Why does a data directory
// belong to one network?".
const networkFile = "network"

var validClusterID = regexp.MustCompile(`^[A-Za-z0-9_-]{1,64}$`)

// readNetwork returns the cluster ID recorded in dir, or "" if none is.
func readNetwork(dir string) (string, error) {
	b, err := os.ReadFile(filepath.Join(dir, networkFile))
	if errors.Is(err, fs.ErrNotExist) {
		return "", nil
	}
	if err != nil {
		return "", fmt.Errorf("reading the data directory's network: %w", err)
	}
	id := strings.TrimSpace(string(b))
	if !validClusterID.MatchString(id) {
		return "", fmt.Errorf("data directory %s: %s holds %q, not a network's cluster id; if the directory is this worker's, remove the file and the worker records its pool's network again", dir, networkFile, truncate(id, 40))
	}
	return id, nil
}

// writeNetwork records the cluster ID of the network dir belongs to.
func writeNetwork(dir, id string) error {
	if !validClusterID.MatchString(id) {
		return fmt.Errorf("the pool sent %q as its cluster id", truncate(id, 40))
	}
	if err := os.MkdirAll(dir, 0o700); err != nil {
		return err
	}
	return atomicfile.Write(filepath.Join(dir, networkFile), []byte(id+"\n"), 0o600)
}

func truncate(s string, n int) string {
	if len(s) <= n {
		return s
	}
	return s[:n] + "..."
}
