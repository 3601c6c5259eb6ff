package localnet

import (
	"errors"
	"log/slog"
	"net"
	"os"
	"path/filepath"
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
