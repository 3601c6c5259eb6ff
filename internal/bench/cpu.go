package bench

import (
	"bytes"
	"fmt"
	"net"
	"os"
	"path/filepath"
	"strconv"
	"strings"
	"time"
)

// A Meter reads the CPU time (user and system) that some processes have
// used so far. Run reads its meters around the measured window and reports
// each one's CPU per call: on a shared machine calls/s move with the load,
// while the CPU a call costs each process moves much less, so it is what
// tells two builds apart.
type Meter struct {
	Name string
	Read func() (time.Duration, error)
}

// CPU is a Meter's CPU time per successful call over a Run.
type CPU struct {
	Name    string
	PerCall time.Duration
}

// ThisProcess meters the calling process: with `bench call`, the client.
func ThisProcess(name string) Meter {
	return Meter{Name: name, Read: func() (time.Duration, error) { return processCPU(), nil }}
}

// Process meters the processes pids, and with descendants every process
// below them as well (a network's workers under `taskworker up`, the
// sandbox children under a worker). A process that ends during a run takes
// its CPU with it, so a run that starts and kills processes is
// undercounted.
func Process(name string, descendants bool, pids ...int) Meter {
	return treeMeter(name, true, descendants, pids)
}

// Children meters every process below pids, not pids themselves.
func Children(name string, pids ...int) Meter { return treeMeter(name, false, true, pids) }

// treeMeter meters pids themselves (self: an error once one has ended),
// the processes below them (below), or both.
func treeMeter(name string, self, below bool, pids []int) Meter {
	return Meter{Name: name, Read: func() (time.Duration, error) {
		procs, err := readProcs()
		if err != nil {
			return 0, err
		}
		var total time.Duration
		for _, pid := range pids {
			if self {
				p, ok := procs[pid]
				if !ok {
					return 0, fmt.Errorf("process %d has ended", pid)
				}
				total += p.cpu
			}
			if below {
				total += procs.below(pid)
			}
		}
		return total, nil
	}}
}

// userHZ is the unit of the CPU times in /proc/PID/stat: fixed at 100 a
// second in Linux's interface to user space, whatever the kernel's tick.
const userHZ = 100

type procInfo struct {
	ppid int
	cpu  time.Duration
}

type procTable map[int]procInfo

// readProcs reads every process's parent and CPU time from /proc.
func readProcs() (procTable, error) {
	ents, err := os.ReadDir("/proc")
	if err != nil {
		return nil, fmt.Errorf("reading processes' CPU needs /proc: %w", err)
	}
	procs := procTable{}
	for _, e := range ents {
		pid, err := strconv.Atoi(e.Name())
		if err != nil {
			continue
		}
		b, err := os.ReadFile(filepath.Join("/proc", e.Name(), "stat"))
		if err != nil {
			continue // ended meanwhile
		}
		if p, ok := parseStat(b); ok {
			procs[pid] = p
		}
	}
	return procs, nil
}

// parseStat reads the parent and user+system time from a /proc/PID/stat
// line. The command name (field 2) is in parentheses and may hold spaces
// and parentheses itself, so the fields are counted from its last ')'.
func parseStat(b []byte) (procInfo, bool) {
	i := bytes.LastIndexByte(b, ')')
	if i < 0 {
		return procInfo{}, false
	}
	f := strings.Fields(string(b[i+1:]))
	// After the name: state(3) ppid(4) ... utime(14) stime(15).
	if len(f) < 13 {
		return procInfo{}, false
	}
	ppid, err1 := strconv.Atoi(f[1])
	ut, err2 := strconv.ParseInt(f[11], 10, 64)
	st, err3 := strconv.ParseInt(f[12], 10, 64)
	if err1 != nil || err2 != nil || err3 != nil {
		return procInfo{}, false
	}
	return procInfo{ppid: ppid, cpu: time.Duration(ut+st) * time.Second / userHZ}, true
}

// below is the CPU time of every process below pid.
func (t procTable) below(pid int) time.Duration {
	children := map[int][]int{}
	for p, info := range t {
		children[info.ppid] = append(children[info.ppid], p)
	}
	var total time.Duration
	queue := children[pid]
	for len(queue) > 0 {
		p := queue[0]
		queue = queue[1:]
		total += t[p].cpu
		queue = append(queue, children[p]...)
	}
	return total
}

// ListeningPID returns the process on this machine that listens on the TCP
// address addr (host:port), or 0 if there is none it can see: the address
// is another machine's, or the process is another user's. It reads the
// kernel's socket tables and the processes' open files, as ss -p does.
func ListeningPID(addr string) (int, error) {
	host, portStr, err := net.SplitHostPort(addr)
	if err != nil {
		return 0, fmt.Errorf("address %q is not host:port", addr)
	}
	port, err := strconv.ParseUint(portStr, 10, 16)
	if err != nil {
		return 0, fmt.Errorf("address %q: port %q is not a number", addr, portStr)
	}
	ip := net.ParseIP(host)
	if ip == nil && host != "localhost" {
		return 0, nil // a name: not resolved here, and rarely this machine
	}
	inodes := map[string]bool{}
	for _, table := range []string{"/proc/net/tcp", "/proc/net/tcp6"} {
		b, err := os.ReadFile(table)
		if err != nil {
			continue
		}
		for _, line := range strings.Split(string(b), "\n")[1:] {
			f := strings.Fields(line)
			// sl local_address rem_address st tx:rx tr:when retrnsmt uid timeout inode
			if len(f) < 10 || f[3] != "0A" { // 0A: LISTEN
				continue
			}
			_, p, ok := strings.Cut(f[1], ":")
			if !ok {
				continue
			}
			if lp, err := strconv.ParseUint(p, 16, 16); err != nil || lp != port {
				continue
			}
			inodes["socket:["+f[9]+"]"] = true
		}
	}
	if len(inodes) == 0 {
		return 0, nil
	}
	ents, err := os.ReadDir("/proc")
	if err != nil {
		return 0, err
	}
	for _, e := range ents {
		pid, err := strconv.Atoi(e.Name())
		if err != nil {
			continue
		}
		fds, err := os.ReadDir(filepath.Join("/proc", e.Name(), "fd"))
		if err != nil {
			continue // another user's, or ended
		}
		for _, fd := range fds {
			if link, err := os.Readlink(filepath.Join("/proc", e.Name(), "fd", fd.Name())); err == nil && inodes[link] {
				return pid, nil
			}
		}
	}
	return 0, nil
}

// readMeters reads every meter; a meter that fails is left out of the
// result (its process ended, or /proc is not there), not the run.
func readMeters(meters []Meter) []time.Duration {
	out := make([]time.Duration, len(meters))
	for i, m := range meters {
		v, err := m.Read()
		if err != nil {
			out[i] = -1
			continue
		}
		out[i] = v
	}
	return out
}

// perCall turns two readings of the meters into CPU per call.
func perCall(meters []Meter, before, after []time.Duration, calls int) []CPU {
	if calls == 0 {
		return nil
	}
	var out []CPU
	for i, m := range meters {
		if before[i] < 0 || after[i] < 0 {
			continue
		}
		out = append(out, CPU{Name: m.Name, PerCall: (after[i] - before[i]) / time.Duration(calls)})
	}
	return out
}

// CPULine prints the result's CPU per call, one figure a meter, or ""
// if it has none.
func (r Result) CPULine() string {
	if len(r.CPU) == 0 {
		return ""
	}
	parts := make([]string, len(r.CPU))
	for i, c := range r.CPU {
		parts[i] = fmt.Sprintf("%s %.1f µs", c.Name, float64(c.PerCall)/float64(time.Microsecond))
	}
	return fmt.Sprintf("  CPU per call (%s): %s", r.Target, strings.Join(parts, ", "))
}
