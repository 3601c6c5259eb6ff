package bench

import (
	"context"
	"net"
	"os"
	"os/exec"
	"testing"
	"time"
)

func TestParseStat(t *testing.T) {
	for _, tc := range []struct {
		name, line string
		ppid       int
		cpu        time.Duration
		ok         bool
	}{
		{"plain", "42 (taskworker) S 7 42 42 0 -1 4194560 100 0 0 0 250 50 0 0 20 0 12 0", 7, 3 * time.Second, true},
		{"a name with spaces and parentheses", "43 (a) b (c) R 1 43 43 0 -1 0 0 0 0 0 1 2 0 0 20 0 1 0", 1, 30 * time.Millisecond, true},
		{"cut short", "44 (x) S 1 2 3", 0, 0, false},
		{"no name", "45 S 1", 0, 0, false},
		{"not numbers", "46 (x) S one 0 0 0 0 0 0 0 0 0 a b 0 0", 0, 0, false},
	} {
		t.Run(tc.name, func(t *testing.T) {
			p, ok := parseStat([]byte(tc.line))
			if ok != tc.ok || p.ppid != tc.ppid || p.cpu != tc.cpu {
				t.Fatalf("parseStat(%q) = %+v, %v; want ppid %d cpu %v, %v", tc.line, p, ok, tc.ppid, tc.cpu, tc.ok)
			}
		})
	}
}

// The listener of an address on this machine is found; a free port, a
// name and bad addresses give none.
func TestListeningPID(t *testing.T) {
	l, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	defer l.Close()
	if pid, err := ListeningPID(l.Addr().String()); err != nil || pid != os.Getpid() {
		t.Fatalf("ListeningPID(%s) = %d, %v; want this process, %d", l.Addr(), pid, err, os.Getpid())
	}
	free, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	freeAddr := free.Addr().String()
	free.Close()
	for _, addr := range []string{freeAddr, "pool.example:50051"} {
		if pid, err := ListeningPID(addr); err != nil || pid != 0 {
			t.Errorf("ListeningPID(%s) = %d, %v; want 0, nil", addr, pid, err)
		}
	}
	for _, addr := range []string{"127.0.0.1", "127.0.0.1:port"} {
		if _, err := ListeningPID(addr); err == nil {
			t.Errorf("ListeningPID(%q): no error", addr)
		}
	}
}

// A child that spins is metered as a descendant of this process, not as
// this process, and Run reports CPU per call from the meters.
func TestMetersFollowChildren(t *testing.T) {
	ctx, cancel := context.WithCancel(context.Background())
	defer cancel()
	spin := exec.CommandContext(ctx, "sh", "-c", "while :; do :; done")
	if err := spin.Start(); err != nil {
		t.Fatal(err)
	}
	defer spin.Wait()
	self := os.Getpid()
	below := Children("below", self)
	r := Run(ctx, "x", 1, 0, 300*time.Millisecond, func(context.Context) error {
		time.Sleep(10 * time.Millisecond)
		return nil
	}, ThisProcess("client"), below, Process("spinner", false, spin.Process.Pid), Process("gone", false, 1<<30))
	cancel()
	if len(r.CPU) != 3 {
		t.Fatalf("CPU %+v: want client, below and spinner (the process that does not exist left out)", r.CPU)
	}
	if r.CPU[1].PerCall <= 0 || r.CPU[2].PerCall <= 0 {
		t.Fatalf("CPU %+v: the spinning child used none", r.CPU)
	}
	if line := r.CPULine(); line == "" {
		t.Fatal("no CPU line")
	}
}
