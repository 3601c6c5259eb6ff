package e2e

import (
	"crypto/sha256"
	"encoding/hex"
	"os"
	"os/exec"
	"path/filepath"
	"strings"
	"testing"
	"time"

	"github.com/hivemind/taskworker/internal/proctest"
)

// buildTestdata builds the main package ./internal/e2e/testdata/NAME into
// dir as out: a program for this machine, or, with env (GOOS=wasip1
// GOARCH=wasm), a WebAssembly reactor (-buildmode=c-shared).
func buildTestdata(t *testing.T, dir, name, out string, env ...string) string {
	t.Helper()
	path := filepath.Join(dir, out)
	args := []string{"build", "-o", path}
	if len(env) > 0 {
		args = append(args, "-buildmode=c-shared")
	}
	cmd := exec.Command("go", append(args, "./testdata/"+name)...)
	// -race, if GOFLAGS sets it, does not exist for wasm.
	cmd.Env = append(os.Environ(), append(env, "GOFLAGS=")...)
	if msg, err := cmd.CombinedOutput(); err != nil {
		t.Fatalf("building %s: %v\n%s", name, err, msg)
	}
	return path
}

// A native Go function (the library's taskworker.Secret, in a worker
// program of its own) and a deployed WebAssembly function (the host
// function taskworker.secret_get) read a granted secret through the pool,
// every process real. Reads of a secret not granted, and reads after the
// grant is revoked, are refused with PermissionDenied; a secret that does
// not exist is NotFound. The functions return a digest of the value; the
// value itself is in no output of any process (pool and workers at debug
// level) nor of any command; the audit lists the granted reads, by each
// function.
func TestNativeAndWasmFunctionsReadSecrets(t *testing.T) {
	const (
		granted    = "granted-value-7d1e94b0c3"
		notGranted = "other-value-52aa8f061e"
	)
	digest := func(v string) string {
		sum := sha256.Sum256([]byte(v))
		return `"` + hex.EncodeToString(sum[:]) + `"`
	}
	build := t.TempDir()
	native := buildTestdata(t, build, "secretworker", "secretworker")
	wasm := buildTestdata(t, build, "secretguest", "secretguest.wasm", "GOOS=wasip1", "GOARCH=wasm", "CGO_ENABLED=0")

	n := &network{t: t, dir: t.TempDir(), poolAddr: freeAddr(t)}
	n.startPool()
	n.workers = append(n.workers, n.startWorker("worker_001"))
	lib := &proctest.Process{Name: "native_001", Exe: native, Log: filepath.Join(t.TempDir(), "out.log"), Args: []string{
		"--id", "native_001", "--pool", n.poolAddr, "--join-token-file", filepath.Join(n.dir, "join.token"),
		"--ca", n.ca(), "--data-dir", filepath.Join(n.dir, "workers", "native_001")}}
	if err := lib.Start(); err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() {
		lib.Kill()
		if t.Failed() {
			t.Logf("--- output of %s:\n%s", lib.Name, lib.Output())
		}
	})
	n.workers = append(n.workers, lib)
	n.waitWorkers(2, 30*time.Second)

	out, err := n.cli("token", "create", "--user", "alice")
	if err != nil {
		t.Fatal(err)
	}
	alice := strings.TrimSpace(out)
	var outputs []string // every command's output, to search for the values
	run := func(stdin string, args ...string) (string, error) {
		out, err := n.cliAs(alice, stdin, args...)
		outputs = append(outputs, out)
		return out, err
	}
	must := func(t *testing.T, stdin string, args ...string) string {
		t.Helper()
		out, err := run(stdin, args...)
		if err != nil {
			t.Fatalf("%s: %v: %s", strings.Join(args, " "), err, out)
		}
		return out
	}
	must(t, granted, "secret", "put", "GRANTED")
	must(t, notGranted, "secret", "put", "NOT_GRANTED")
	// A native function acts for its caller: her grant names it.
	must(t, "", "secret", "grant", "GRANTED", "--function", "read_secret")
	must(t, "", "deploy", "wasm_reader", wasm, "--export", "read_secret", "--secret", "GRANTED")

	functions := []struct {
		name string
		// how a refusal reads: a native function returns the pool's
		// status, code kept; a guest's error carries the code in its
		// message.
		denied, notFound string
	}{
		{"read_secret", "PermissionDenied", "NotFound"},
		{"wasm_reader", "permission_denied", "not_found"},
	}
	// A generous time limit: the module's first call compiles it, which
	// takes long on a loaded machine.
	call := []string{"call", "--timeout", "2m"}
	refused := func(t *testing.T, fn, secret, want string) {
		t.Helper()
		out, err := run("", append(call, fn, secret)...)
		if err == nil || !strings.Contains(out, want) {
			t.Errorf("call %s %s: %v, %s; want a refusal saying %s", fn, secret, err, out, want)
		}
	}
	for _, f := range functions {
		t.Run(f.name, func(t *testing.T) {
			for range 2 {
				if out := must(t, "", append(call, f.name, "GRANTED")...); out != digest(granted) {
					t.Errorf("call %s GRANTED = %s, want the digest of the value %s", f.name, out, digest(granted))
				}
			}
			refused(t, f.name, "NOT_GRANTED", f.denied)
			refused(t, f.name, "NO_SUCH_SECRET", f.notFound)
		})
	}

	audit := must(t, "", "audit")
	for _, f := range functions {
		if got := strings.Count(audit, f.name); got != 2 {
			t.Errorf("the audit lists %d reads by %s, want its 2 granted reads:\n%s", got, f.name, audit)
		}
	}
	if strings.Contains(audit, "NOT_GRANTED") {
		t.Errorf("the audit lists a refused read as a read:\n%s", audit)
	}

	must(t, "", "secret", "revoke", "GRANTED", "--function", "read_secret")
	must(t, "", "secret", "revoke", "GRANTED", "--function", "wasm_reader")
	for _, f := range functions {
		refused(t, f.name, "GRANTED", f.denied)
	}
	if after := must(t, "", "audit"); strings.Count(after, "GRANTED") != strings.Count(audit, "GRANTED") {
		t.Errorf("reads after the revocation were recorded as reads:\n%s", after)
	}

	for _, v := range []string{granted, notGranted} {
		for _, p := range append(n.workers, n.pool) {
			if strings.Contains(p.Output(), v) {
				t.Errorf("the output of %s holds a secret's value", p.Name)
			}
		}
		for _, out := range outputs {
			if strings.Contains(out, v) {
				t.Errorf("a command's output holds a secret's value: %s", out)
			}
		}
	}
	// The functions did log at debug level: the search above looked at
	// something.
	if !strings.Contains(lib.Output(), "level=DEBUG") {
		t.Errorf("the native worker logged nothing at debug level:\n%s", lib.Output())
	}
}
