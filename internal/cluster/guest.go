package cluster

import (
	"fmt"
	"os"
	"os/exec"
	"path/filepath"
	"slices"
	"strings"
	"sync"
	"testing"
)

var guestBuilds sync.Map // package path -> func() ([]byte, error)

// BuildGuest builds a Go guest package of this repository (a path such as
// "./examples/go-add", from the module root) as a wasip1 reactor, once per
// test binary, and returns the module's bytes.
func BuildGuest(t testing.TB, pkg string) []byte {
	t.Helper()
	f, _ := guestBuilds.LoadOrStore(pkg, sync.OnceValues(func() ([]byte, error) {
		gomod, err := exec.Command("go", "env", "GOMOD").Output()
		if err != nil {
			return nil, fmt.Errorf("finding the module root: %w", err)
		}
		dir, err := os.MkdirTemp("", "tw-guest-")
		if err != nil {
			return nil, err
		}
		defer os.RemoveAll(dir)
		out := filepath.Join(dir, "guest.wasm")
		cmd := exec.Command("go", "build", "-buildmode=c-shared", "-o", out, pkg)
		cmd.Dir = filepath.Dir(strings.TrimSpace(string(gomod)))
		// -race, if set for the tests through GOFLAGS, does not exist for wasm.
		flags := slices.DeleteFunc(strings.Fields(os.Getenv("GOFLAGS")), func(f string) bool { return f == "-race" })
		cmd.Env = append(os.Environ(), "GOOS=wasip1", "GOARCH=wasm", "CGO_ENABLED=0", "GOFLAGS="+strings.Join(flags, " "))
		if msg, err := cmd.CombinedOutput(); err != nil {
			return nil, fmt.Errorf("building %s: %v\n%s", pkg, err, msg)
		}
		return os.ReadFile(out)
	}))
	b, err := f.(func() ([]byte, error))()
	if err != nil {
		t.Fatal(err)
	}
	return b
}
