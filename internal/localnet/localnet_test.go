package localnet

import (
	"errors"
	"fmt"
	"log/slog"
	"net"
	"os"
	"path/filepath"
	"runtime"
	"strings"
	"testing"
)

func TestCheckListen(t *testing.T) {
	busy, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	defer busy.Close()
	free := "127.0.0.1:0" // any port: always free
	log := slog.New(slog.DiscardHandler)
	tests := []struct {
		name    string
		addr    string
		anyPort bool
		want    string
		wantErr error
	}{
		{"free", free, false, free, nil},
		{"free, any port allowed", free, true, free, nil},
		{"busy", busy.Addr().String(), false, "", ErrListenInUse},
		{"busy, any port allowed", busy.Addr().String(), true, "127.0.0.1:0", nil},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			got, err := checkListen(tt.addr, tt.anyPort, log)
			if !errors.Is(err, tt.wantErr) || got != tt.want {
				t.Fatalf("checkListen(%s, %v) = %q, %v; want %q, %v", tt.addr, tt.anyPort, got, err, tt.want, tt.wantErr)
			}
			if err != nil && !strings.Contains(err.Error(), "pass --listen") {
				t.Errorf("error %q does not say what to do", err)
			}
		})
	}
	if _, err := checkListen("256.0.0.1:1", false, log); err == nil || !strings.Contains(err.Error(), "--listen 256.0.0.1:1") {
		t.Errorf("an address that cannot be listened on: %v", err)
	}
}

// A second network in a directory in use is refused before it writes
// anything, and names the running network's pool.
func TestStartRefusesADirectoryInUse(t *testing.T) {
	dir := t.TempDir()
	lock, err := lockDir(dir)
	if err != nil {
		t.Fatal(err)
	}
	defer lock.Close()
	if err := os.WriteFile(filepath.Join(dir, EnvFile), []byte("TASKWORKER_POOL=127.0.0.1:50051\nTASKWORKER_TOKEN=tw_x\n"), 0o600); err != nil {
		t.Fatal(err)
	}
	_, err = Start(t.Context(), Config{Dir: dir, Workers: 1, Listen: "127.0.0.1:0", Executable: "/nonexistent"})
	if !errors.Is(err, ErrDirInUse) || !strings.Contains(err.Error(), "its pool at 127.0.0.1:50051") || !strings.Contains(err.Error(), "another --dir") {
		t.Fatalf("Start in a directory in use: %v", err)
	}
	entries, _ := os.ReadDir(dir)
	if len(entries) != 2 { // the lock and the other network's env file
		t.Errorf("Start wrote into a directory in use: %v", entries)
	}
	// Once the other network is gone, its lock goes with it.
	lock.Close()
	again, err := lockDir(dir)
	if err != nil {
		t.Fatalf("lock after the holder closed it: %v", err)
	}
	again.Close()
}

// A busy address is refused before the pool writes tokens or etcd data.
func TestStartChecksTheAddressFirst(t *testing.T) {
	busy, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	defer busy.Close()
	dir := t.TempDir()
	_, err = Start(t.Context(), Config{Dir: dir, Workers: 1, Listen: busy.Addr().String(), Executable: "/nonexistent"})
	if !errors.Is(err, ErrListenInUse) {
		t.Fatalf("Start on a busy address: %v", err)
	}
	if _, err := os.Stat(filepath.Join(dir, "pool")); !errors.Is(err, os.ErrNotExist) {
		t.Errorf("the pool's directory was made: %v", err)
	}
}

func TestWorkerShare(t *testing.T) {
	tests := []struct{ cpus, workers, want int }{
		{2, 1, 2},
		{2, 2, 1},
		{2, 3, 1}, // `up` on two CPUs
		{2, 7, 1}, // `bench files`
		{8, 3, 3}, // rounded up: together the workers can use every CPU
		{16, 7, 3},
		{1, 1, 1},
		{64, 64, 1},
	}
	for _, tt := range tests {
		if got := WorkerShare(tt.cpus, tt.workers); got != tt.want {
			t.Errorf("WorkerShare(%d CPUs, %d workers) = %d, want %d", tt.cpus, tt.workers, got, tt.want)
		}
	}
}

// The workers' environment sets GOMAXPROCS to the configured share, or
// leaves the one the operator set.
func TestWorkerEnv(t *testing.T) {
	gomaxprocs := func(env []string) string {
		if env == nil {
			return "inherited"
		}
		v := "unset"
		for _, kv := range env {
			if s, ok := strings.CutPrefix(kv, "GOMAXPROCS="); ok {
				v = s // the last one counts
			}
		}
		return v
	}
	t.Setenv("GOMAXPROCS", "")
	os.Unsetenv("GOMAXPROCS")
	c := Config{Workers: 3}
	if got, want := gomaxprocs(c.workerEnv()), fmt.Sprint(WorkerShare(runtime.GOMAXPROCS(0), 3)); got != want {
		t.Errorf("default: GOMAXPROCS %s, want %s", got, want)
	}
	c.WorkerProcs = 5
	if got := gomaxprocs(c.workerEnv()); got != "5" {
		t.Errorf("WorkerProcs 5: GOMAXPROCS %s", got)
	}
	t.Setenv("GOMAXPROCS", "4")
	if got := gomaxprocs(c.workerEnv()); got != "5" {
		t.Errorf("WorkerProcs 5 with GOMAXPROCS=4 set: GOMAXPROCS %s, want the configured 5", got)
	}
	c.WorkerProcs = 0
	if got := gomaxprocs(c.workerEnv()); got != "inherited" {
		t.Errorf("GOMAXPROCS=4 set: the workers' is %s, want it inherited", got)
	}
	c.WorkerProcs = -1
	c.Dir, c.Executable = t.TempDir(), "/bin/true"
	if err := c.Validate(); err == nil || !strings.Contains(err.Error(), "at least 1") {
		t.Errorf("WorkerProcs -1: %v", err)
	}
}
