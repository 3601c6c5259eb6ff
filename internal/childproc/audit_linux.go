//go:build linux

package childproc

import (
	"fmt"
	"os"
	"path/filepath"
	"strings"
)

// Audit checks a running, hardened child from outside, through /proc: an
// empty environment, working directory /, no_new_privs, a seccomp filter
// (where this architecture has one), no descriptor but pipes, the
// runtime's anonymous inodes and the cgroup files it reads, and a cap on
// its address space and core files. It returns what is wrong, for tests.
func Audit(pid int, seccomp bool) ([]string, error) {
	proc := fmt.Sprintf("/proc/%d", pid)
	var problems []string
	if env, err := os.ReadFile(proc + "/environ"); err != nil || len(env) != 0 {
		problems = append(problems, fmt.Sprintf("environment %q, %v: want empty", env, err))
	}
	if cwd, err := os.Readlink(proc + "/cwd"); err != nil || cwd != "/" {
		problems = append(problems, fmt.Sprintf("working directory %q, %v: want /", cwd, err))
	}
	status, err := os.ReadFile(proc + "/status")
	if err != nil {
		return nil, err
	}
	want := []string{"NoNewPrivs:\t1"}
	if seccomp {
		want = append(want, "Seccomp:\t2")
	}
	for _, w := range want {
		if !strings.Contains(string(status), w) {
			problems = append(problems, fmt.Sprintf("%s/status has no %q", proc, w))
		}
	}
	fds, err := filepath.Glob(proc + "/fd/*")
	if err != nil {
		return nil, err
	}
	for _, fd := range fds {
		target, err := os.Readlink(fd)
		if err != nil {
			return nil, err
		}
		// The pipes to the parent, the runtime's own epoll and event
		// descriptors and the cgroup CPU files it reads for GOMAXPROCS: no
		// other file, no socket, nothing inherited (a test binary may have
		// inherited some from the shell).
		if !strings.HasPrefix(target, "pipe:") && !strings.HasPrefix(target, "anon_inode:") &&
			!strings.HasPrefix(target, "/sys/fs/cgroup/") {
			problems = append(problems, fmt.Sprintf("child descriptor %s is %s", filepath.Base(fd), target))
		}
	}
	limits, err := os.ReadFile(proc + "/limits")
	if err != nil {
		return nil, err
	}
	for _, line := range strings.Split(string(limits), "\n") {
		if (strings.HasPrefix(line, "Max address space") || strings.HasPrefix(line, "Max core file size")) &&
			strings.Contains(line, "unlimited") {
			problems = append(problems, "not limited: "+line)
		}
	}
	return problems, nil
}

// Confinement is what confines a running child, read from outside through
// /proc.
type Confinement struct {
	// Seccomp is the Seccomp: line of its status: 2 under a filter.
	Seccomp int
	// Namespaces are those of user, mnt and net that it does not share
	// with this process.
	Namespaces []string
}

// Inspect reads what confines the process pid (see Confinement).
func Inspect(pid int) (Confinement, error) {
	var c Confinement
	status, err := os.ReadFile(fmt.Sprintf("/proc/%d/status", pid))
	if err != nil {
		return c, err
	}
	for _, line := range strings.Split(string(status), "\n") {
		if v, ok := strings.CutPrefix(line, "Seccomp:"); ok {
			if _, err := fmt.Sscan(v, &c.Seccomp); err != nil {
				return c, fmt.Errorf("/proc/%d/status: %q: %w", pid, line, err)
			}
		}
	}
	for _, ns := range []string{"user", "mnt", "net"} {
		theirs, err := os.Readlink(fmt.Sprintf("/proc/%d/ns/%s", pid, ns))
		if err != nil {
			return c, err
		}
		ours, err := os.Readlink("/proc/self/ns/" + ns)
		if err != nil {
			return c, err
		}
		if theirs != ours {
			c.Namespaces = append(c.Namespaces, ns)
		}
	}
	return c, nil
}
