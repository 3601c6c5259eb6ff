package e2e

import (
	"bytes"
	"context"
	"crypto/rand"
	"fmt"
	mrand "math/rand/v2"
	"sync"
	"testing"
	"time"

	v1 "github.com/hivemind/taskworker/api/taskworker/v1"
)

func randomBytes(n int) []byte {
	b := make([]byte, n)
	_, _ = rand.Read(b)
	return b
}

// 8 worker processes: 100 files pushed; two workers SIGKILLed (with pushes
// going on): every acknowledged file reads back identical, and repair
// restores full redundancy; two more SIGKILLed: every file still reads back.
func TestFilesSurviveWorkerLoss(t *testing.T) {
	n := startNetwork(t, 8)
	c := n.client()
	ctx, cancel := context.WithTimeout(context.Background(), 3*time.Minute)
	defer cancel()
	var mu sync.Mutex
	stored := map[string][]byte{}
	push := func(i int) {
		data := randomBytes(mrand.IntN(256 << 10))
		info, err := c.Push(ctx, fmt.Sprintf("file-%d", i), data)
		if err != nil {
			return // not acknowledged: nothing promised
		}
		mu.Lock()
		stored[info.FileId] = data
		mu.Unlock()
	}
	var wg sync.WaitGroup
	for i := range 100 {
		wg.Go(func() { push(i) })
		if i%8 == 7 {
			wg.Wait()
		}
	}
	wg.Wait()
	if len(stored) != 100 {
		t.Fatalf("%d of 100 pushes acknowledged with all workers up", len(stored))
	}
	// Kill two workers while 20 more pushes run.
	for i := range 20 {
		wg.Go(func() { push(100 + i) })
	}
	n.workers[1].Kill()
	n.workers[5].Kill()
	wg.Wait()
	readAll := func(when string) {
		t.Helper()
		for id, data := range stored {
			got, err := c.Get(ctx, id)
			if err != nil || !bytes.Equal(got, data) {
				t.Fatalf("%s: file %s: %d of %d bytes, %v", when, id, len(got), len(data), err)
			}
		}
	}
	readAll("two workers killed")
	status := func() *v1.StatusResponse {
		st, err := v1.NewAdminServiceClient(c.Conn()).Status(ctx, &v1.StatusRequest{})
		if err != nil {
			t.Fatal(err)
		}
		return st
	}
	// Until the pool has seen the two leases expire it counts their shards
	// as there; then the files are reduced until repair brings them back.
	deadline := time.Now().Add(90 * time.Second)
	for st := status(); st.Workers != 6 || st.FilesFull != int64(len(stored)); st = status() {
		if time.Now().After(deadline) {
			t.Fatalf("repair did not restore full redundancy: %+v", st)
		}
		time.Sleep(500 * time.Millisecond)
	}
	t.Logf("%d files at full redundancy after repair: %+v", len(stored), status())
	n.workers[2].Kill()
	n.workers[6].Kill()
	readAll("four workers killed")
}

// A pool SIGKILLed in the middle of a push leaves no half-visible file.
func TestPoolKilledMidPush(t *testing.T) {
	n := startNetwork(t, 6)
	c := n.client()
	ctx, cancel := context.WithTimeout(context.Background(), 2*time.Minute)
	defer cancel()
	kept, err := c.Push(ctx, "kept", []byte("acknowledged before the crash"))
	if err != nil {
		t.Fatal(err)
	}
	done := make(chan error, 1)
	go func() {
		_, err := c.Upload(ctx, "interrupted", &slowReader{left: 256 << 20})
		done <- err
	}()
	time.Sleep(700 * time.Millisecond)
	n.pool.Kill()
	if err := <-done; err == nil {
		t.Fatal("the upload succeeded although the pool was killed under it")
	}
	n.startPool()
	c2 := n.client()
	files, err := c2.List(ctx)
	if err != nil {
		t.Fatal(err)
	}
	if len(files) != 1 || files[0].FileId != kept.FileId {
		t.Fatalf("after the crash the pool lists %v; want only the acknowledged file", files)
	}
	got, err := c2.Get(ctx, kept.FileId)
	if err != nil || string(got) != "acknowledged before the crash" {
		t.Fatalf("the acknowledged file: %q, %v", got, err)
	}
}

// slowReader yields left pseudo-random bytes, a megabyte at a time.
type slowReader struct{ left int }

func (r *slowReader) Read(p []byte) (int, error) {
	if r.left == 0 {
		return 0, fmt.Errorf("unreachable: the pool should be gone")
	}
	n := min(len(p), r.left, 1<<20)
	_, _ = rand.Read(p[:n])
	r.left -= n
	time.Sleep(5 * time.Millisecond)
	return n, nil
}
