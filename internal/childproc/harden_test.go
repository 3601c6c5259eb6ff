//go:build linux && (amd64 || arm64)

package childproc

import (
	"encoding/json"
	"fmt"
	"net"
	"os"
	"os/exec"
	"runtime"
	"strings"
	"sync"
	"syscall"
	"testing"

	"golang.org/x/sys/unix"

	"github.com/hivemind/taskworker/internal/childproc/childproctest"
)

// hardenProbeArg makes the test binary run hardenProbe instead of the
// tests (see TestMain).
const hardenProbeArg = "__childproc-harden-probe"

// hardenProbe sets a child's limits and hardening up as Main does, then
// tries what a compromised interpreter would, and prints what each attempt
// returned as JSON.
func hardenProbe() int {
	results := map[string]string{}
	_, _, err := LimitMemory(64 * MiB)
	results["LimitMemory"] = fmt.Sprint(err)
	results["hardening"], err = Harden(false)
	results["harden"] = fmt.Sprint(err)

	try := func(name string, err error) { results[name] = fmt.Sprint(err) }
	_, err = os.Open("/etc/hostname")
	try("open", err)
	_, err = net.Dial("tcp", "127.0.0.1:9")
	try("socket", err)
	cmd := exec.Command("/bin/true")
	cmd.Stdin, cmd.Stdout, cmd.Stderr = os.Stderr, os.Stderr, os.Stderr // no /dev/null to open
	try("exec", cmd.Run())
	try("kill parent", syscall.Kill(os.Getppid(), 0))
	try("raise rlimit", unix.Setrlimit(unix.RLIMIT_AS, &unix.Rlimit{Cur: unix.RLIM_INFINITY, Max: unix.RLIM_INFINITY}))
	_, err = unix.Mmap(-1, 0, 4096, unix.PROT_READ|unix.PROT_EXEC, unix.MAP_ANON|unix.MAP_PRIVATE)
	try("mmap exec", err)
	try("ptrace", unix.PtraceAttach(os.Getppid()))
	_, err = unix.Getdents(0, make([]byte, 64))
	try("getdents", err)

	// What the runtime needs still works: new threads, the garbage
	// collector, signals to itself.
	var wg sync.WaitGroup
	for range 8 {
		wg.Go(func() {
			runtime.LockOSThread() // a thread of its own, and it exits with the goroutine
			_ = make([]byte, 1<<20)
			runtime.GC()
		})
	}
	wg.Wait()
	try("threads and GC", nil)
	_, err = unix.Poll([]unix.PollFd{{Fd: 2, Events: unix.POLLOUT}}, 0) // Spin
	try("poll", err)
	try("signal self", syscall.Kill(os.Getpid(), 0))

	json.NewEncoder(os.Stdout).Encode(results)
	return 0
}

// TestHardening runs hardenProbe in a child of its own.
func TestHardening(t *testing.T) {
	exe, err := os.Executable()
	if err != nil {
		t.Fatal(err)
	}
	var stderr strings.Builder
	cmd := exec.Command(exe, hardenProbeArg)
	cmd.Stderr = &stderr
	out, err := cmd.Output()
	if err != nil {
		t.Fatalf("probe: %v\n%s", err, stderr.String())
	}
	var got map[string]string
	if err := json.Unmarshal(out, &got); err != nil {
		t.Fatalf("probe output %q: %v", out, err)
	}
	const eperm = "operation not permitted"
	for name, want := range map[string]string{
		"LimitMemory":    "<nil>",
		"harden":         "<nil>",
		"hardening":      "cwd=/,no_new_privs,seccomp",
		"open":           "open /etc/hostname: " + eperm,
		"socket":         "dial tcp 127.0.0.1:9: socket: " + eperm,
		"exec":           "fork/exec /bin/true: " + eperm,
		"kill parent":    eperm,
		"raise rlimit":   eperm,
		"mmap exec":      eperm,
		"ptrace":         eperm,
		"getdents":       eperm,
		"threads and GC": "<nil>",
		"poll":           "<nil>",
		"signal self":    "<nil>",
	} {
		if got[name] != want {
			t.Errorf("%s: got %q, want %q", name, got[name], want)
		}
	}
}

// TestMain runs the test binary as the hardening probe or a child when
// asked.
func TestMain(m *testing.M) {
	childproctest.Main()
	if len(os.Args) > 1 && os.Args[1] == hardenProbeArg {
		os.Exit(hardenProbe())
	}
	if len(os.Args) > 1 && os.Args[1] == echoChildArg {
		os.Exit(echoChild())
	}
	os.Exit(m.Run())
}
