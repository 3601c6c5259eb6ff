//go:build linux && amd64

package starlarkrun

import (
	"encoding/json"
	"fmt"
	"net"
	"os"
	"os/exec"
	"path/filepath"
	"runtime"
	"strings"
	"sync"
	"syscall"
	"testing"

	"golang.org/x/sys/unix"
)

// hardenProbeArg makes the test binary run hardenProbe instead of the
// tests (see TestMain).
const hardenProbeArg = "__starlarkrun-harden-probe"

// hardenProbe sets a child's limits and hardening up as Main does, then
// tries what a compromised interpreter would, and prints what each attempt
// returned as JSON.
func hardenProbe() int {
	results := map[string]string{}
	_, _, err := limitMemory(64 * MiB)
	results["limitMemory"] = fmt.Sprint(err)
	results["hardening"], err = harden()
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
		"limitMemory":    "<nil>",
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
		"signal self":    "<nil>",
	} {
		if got[name] != want {
			t.Errorf("%s: got %q, want %q", name, got[name], want)
		}
	}
}

// TestChildProcess checks a pool child from outside: its environment, its
// directory, its descriptors, its kernel-side restrictions.
func TestChildProcess(t *testing.T) {
	p := newPool(t, testConfig(t))
	mustCall(t, p, addScript, "add", "[1, 2]", "3")
	var pid int
	p.mu.Lock()
	for proc := range p.all {
		pid = proc.ready.PID
	}
	p.mu.Unlock()
	proc := fmt.Sprintf("/proc/%d", pid)

	if env, err := os.ReadFile(proc + "/environ"); err != nil || len(env) != 0 {
		t.Errorf("environment %q, %v: want empty", env, err)
	}
	if cwd, err := os.Readlink(proc + "/cwd"); err != nil || cwd != "/" {
		t.Errorf("working directory %q, %v: want /", cwd, err)
	}
	status, err := os.ReadFile(proc + "/status")
	if err != nil {
		t.Fatal(err)
	}
	for _, want := range []string{"NoNewPrivs:\t1", "Seccomp:\t2"} {
		if !strings.Contains(string(status), want) {
			t.Errorf("/proc/%d/status has no %q", pid, want)
		}
	}
	fds, err := filepath.Glob(proc + "/fd/*")
	if err != nil {
		t.Fatal(err)
	}
	for _, fd := range fds {
		target, err := os.Readlink(fd)
		if err != nil {
			t.Fatal(err)
		}
		// The pipes to the parent, the runtime's own epoll and event
		// descriptors and the cgroup CPU files it reads for GOMAXPROCS: no
		// other file, no socket, nothing inherited (this test binary may
		// have inherited some from the shell).
		if !strings.HasPrefix(target, "pipe:") && !strings.HasPrefix(target, "anon_inode:") &&
			!strings.HasPrefix(target, "/sys/fs/cgroup/") {
			t.Errorf("child descriptor %s is %s", filepath.Base(fd), target)
		}
	}
	for _, line := range strings.Split(string(status), "\n") {
		if strings.HasPrefix(line, "Threads:") || strings.HasPrefix(line, "VmSize:") || strings.HasPrefix(line, "VmRSS:") {
			t.Log(line)
		}
	}
	limits, err := os.ReadFile(proc + "/limits")
	if err != nil {
		t.Fatal(err)
	}
	for _, line := range strings.Split(string(limits), "\n") {
		if strings.HasPrefix(line, "Max address space") || strings.HasPrefix(line, "Max core file size") {
			t.Log(line)
			if strings.Contains(line, "unlimited") {
				t.Errorf("not limited: %s", line)
			}
		}
	}
}
