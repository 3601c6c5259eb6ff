package shardstore

import (
	"os"
	"sync"
)

// groupSync makes many writes durable with one filesystem flush: Put writes
// and renames its shard without fsyncs, then waits for a flush that started
// after it finished. Concurrent Puts share that flush, so the cost of
// durability is paid once per batch instead of twice per shard (file and
// directory), which is what makes small files fast.
//
// Until the flush returns, a crash may leave a renamed shard whose bytes
// never reached the disk; its checksum fails, so it is damage to repair,
// never wrong data, and no such shard was acknowledged.
type groupSync struct {
	flush func() error // flushes the whole filesystem holding the store

	mu        sync.Mutex
	cond      *sync.Cond
	started   uint64 // flushes begun
	completed uint64 // flushes done
	running   bool
	err       error // of the last flush
}

func newGroupSync(flush func() error) *groupSync {
	g := &groupSync{flush: flush}
	g.cond = sync.NewCond(&g.mu)
	return g
}

// wait returns once a flush that began after the call has completed.
func (g *groupSync) wait() error {
	g.mu.Lock()
	defer g.mu.Unlock()
	need := g.started + 1
	if g.running {
		need++ // the running flush may have begun before our write
	}
	for g.completed < need {
		if g.running {
			g.cond.Wait()
			continue
		}
		g.running = true
		g.started++
		gen := g.started
		g.mu.Unlock()
		err := g.flush()
		g.mu.Lock()
		g.running = false
		g.completed = gen
		g.err = err
		g.cond.Broadcast()
	}
	return g.err
}

// openGroupSync returns a groupSync for the filesystem of dir, or nil where
// the platform cannot flush one filesystem (each write is then fsynced on
// its own).
func openGroupSync(dir string) (*groupSync, *os.File, error) {
	d, err := os.Open(dir)
	if err != nil {
		return nil, nil, err
	}
	flush := syncfsFunc(d)
	if flush == nil {
		d.Close()
		return nil, nil, nil
	}
	return newGroupSync(flush), d, nil
}
