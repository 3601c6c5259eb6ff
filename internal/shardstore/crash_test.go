package shardstore

import (
	"bufio"
	"bytes"
	"context"
	"encoding/binary"
	"fmt"
	"io"
	"os"
	"os/exec"
	"strconv"
	"strings"
	"sync"
	"testing"
	"time"
)

const (
	crashDirEnv   = "SHARDSTORE_CRASH_DIR"
	crashStartEnv = "SHARDSTORE_CRASH_START"
	crashKeys     = 20 // the child cycles over this many keys, so it overwrites shards too
)

// crashShard is write i of the crash test: key i%crashKeys, payload i followed by bytes derived from i.
func crashShard(i int) (Key, []byte) {
	data := binary.LittleEndian.AppendUint64(nil, uint64(i))
	data = append(data, payload(uint64(i), 256<<10+(i*7919)%(512<<10))...)
	return Key{FileID: "crash", WriteID: "w", Block: int64(i % crashKeys), Shard: 0}, data
}

// slowReader hands out 16 KiB per Read with a pause, so that the child is almost always mid-write.
type slowReader struct{ data []byte }

func (r *slowReader) Read(p []byte) (int, error) {
	if len(r.data) == 0 {
		return 0, io.EOF
	}
	time.Sleep(200 * time.Microsecond)
	n := copy(p[:min(len(p), 16<<10)], r.data)
	r.data = r.data[n:]
	return n, nil
}

// TestCrashChild is the child process of TestCrashMidWrite: it writes shards until it is killed, printing
// "put N" once write N is acknowledged.
func TestCrashChild(t *testing.T) {
	dir := os.Getenv(crashDirEnv)
	if dir == "" {
		t.Skip("the child process of TestCrashMidWrite")
	}
	start, _ := strconv.Atoi(os.Getenv(crashStartEnv))
	s, err := Open(DefaultConfig(dir))
	if err != nil {
		fmt.Println("error", err)
		os.Exit(3)
	}
	for i := start; ; i++ {
		k, data := crashShard(i)
		if _, err := s.Put(context.Background(), k, &slowReader{data: data}); err != nil {
			fmt.Println("error", err)
			os.Exit(3)
		}
		fmt.Println("put", i)
	}
}

// TestCrashMidWrite SIGKILLs a child process in the middle of writing a shard, several times over one
// store, and checks what is left: the store opens, the crash's temp files are gone, every acknowledged
// write is there (or a later write of the same key), and every shard that verifies holds exactly the bytes
// of one complete write.
func TestCrashMidWrite(t *testing.T) {
	if testing.Short() {
		t.Skip("starts child processes")
	}
	exe, err := os.Executable()
	if err != nil {
		t.Fatal(err)
	}
	dir := t.TempDir()
	next, killedMidWrite := 0, 0
	latestAcked := map[int64]int{} // key block -> last acknowledged write
	const rounds = 4
	for round := range rounds {
		cmd := exec.Command(exe, "-test.run=^TestCrashChild$", "-test.count=1")
		cmd.Env = append(os.Environ(), crashDirEnv+"="+dir, crashStartEnv+"="+strconv.Itoa(next))
		stdout, err := cmd.StdoutPipe()
		if err != nil {
			t.Fatal(err)
		}
		cmd.Stderr = os.Stderr
		if err := cmd.Start(); err != nil {
			t.Fatal(err)
		}
		var mu sync.Mutex
		var acked []int
		var childErr string
		lines := make(chan struct{}, 1000)
		go func() {
			sc := bufio.NewScanner(stdout)
			for sc.Scan() {
				line := sc.Text()
				mu.Lock()
				if n, ok := strings.CutPrefix(line, "put "); ok {
					i, _ := strconv.Atoi(n)
					acked = append(acked, i)
				} else if strings.HasPrefix(line, "error") {
					childErr = line
				}
				mu.Unlock()
				lines <- struct{}{}
			}
			close(lines)
		}()
		// Let a few writes complete, then kill while a temp file exists.
		for n := 0; n < 3+round; n++ {
			if _, ok := <-lines; !ok {
				break
			}
		}
		deadline := time.Now().Add(5 * time.Second)
		for len(tempFiles(t, dir)) == 0 && time.Now().Before(deadline) {
			time.Sleep(time.Millisecond)
		}
		if len(tempFiles(t, dir)) > 0 {
			killedMidWrite++
		}
		cmd.Process.Kill()
		cmd.Wait()
		for range lines {
		}
		mu.Lock()
		if childErr != "" {
			t.Fatalf("child: %s", childErr)
		}
		if len(acked) == 0 {
			t.Fatal("the child acknowledged no write")
		}
		for _, i := range acked {
			k, _ := crashShard(i)
			latestAcked[k.Block] = max(latestAcked[k.Block], i)
			next = max(next, i+2)
		}
		mu.Unlock()

		checkAfterCrash(t, dir, latestAcked, next)
	}
	if killedMidWrite == 0 {
		t.Fatal("no kill landed in the middle of a write; the test proved nothing")
	}
	t.Logf("%d of %d kills landed mid-write; %d writes started", killedMidWrite, rounds, next)
}

func checkAfterCrash(t *testing.T, dir string, latestAcked map[int64]int, next int) {
	t.Helper()
	s, err := Open(DefaultConfig(dir))
	if err != nil {
		t.Fatalf("open after a crash: %v", err)
	}
	defer s.Close()
	if temps := tempFiles(t, dir); len(temps) > 0 {
		t.Fatalf("Open left the crash's temp files: %v", temps)
	}
	found := map[int64]bool{}
	for k, err := range s.List(t.Context(), "") {
		if err != nil {
			t.Fatal(err)
		}
		got, _, err := s.Get(t.Context(), k)
		if err != nil {
			t.Fatalf("%s after a crash: %v", k, err)
		}
		i := int(binary.LittleEndian.Uint64(got))
		_, want := crashShard(i)
		if i%crashKeys != int(k.Block) || i >= next || !bytes.Equal(got, want) {
			t.Fatalf("%s holds bytes that are not one complete write (claims write %d)", k, i)
		}
		if i < latestAcked[k.Block] {
			t.Fatalf("%s holds write %d, older than acknowledged write %d", k, i, latestAcked[k.Block])
		}
		found[k.Block] = true
	}
	for b := range latestAcked {
		if !found[b] {
			t.Fatalf("acknowledged shard for block %d is missing", b)
		}
	}
}
