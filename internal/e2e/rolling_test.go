package e2e

import (
	"bytes"
	"context"
	"fmt"
	"io"
	"math/rand/v2"
	"net/http"
	"path/filepath"
	"regexp"
	"slices"
	"strconv"
	"strings"
	"sync"
	"sync/atomic"
	"syscall"
	"testing"
	"time"

	"google.golang.org/grpc/status"

	"github.com/hivemind/taskworker"
	v1 "github.com/hivemind/taskworker/api/taskworker/v1"
	"github.com/hivemind/taskworker/internal/proctest"
	"github.com/hivemind/taskworker/internal/quota"
)

// The upgrade procedure of docs/OPERATIONS.md ("Upgrading one node at a
// time"), every part a process of the built binary: three etcd members,
// two pool replicas, four workers in two zones, each worker and the
// clients given both pools. Under a steady load of idempotent calls and of
// pushes (new files and new versions), each pool is restarted (SIGTERM,
// exit, start, serving and taking calls again), then each worker (SIGTERM,
// exit, start, registered again, files back to full redundancy), then an
// etcd member is killed and brought back. No call fails, every version of
// every file pushed reads back byte for byte, and redundancy is full.
func TestRollingRestart(t *testing.T) {
	ec := startEtcdCluster(t)
	ctx, cancel := context.WithTimeout(context.Background(), 8*time.Minute)
	defer cancel()

	// Two pools, each with its own data directory, address and metrics.
	type replica struct {
		name, dir, addr, metrics string
		p                        *proctest.Process
	}
	var pools []*replica
	for i := range 2 {
		r := &replica{name: fmt.Sprintf("pool%d", i+1), dir: filepath.Join(ec.dir, fmt.Sprintf("pool%d", i+1)), addr: freeAddr(t), metrics: freeAddr(t)}
		r.p = ec.startReplica(r.name, r.dir, r.addr, "--metrics-listen", r.metrics, "--log-level", "debug")
		pools = append(pools, r)
	}
	n := &network{t: t, dir: pools[0].dir, caFile: filepath.Join(ec.net, "ca.crt"), pool: pools[0].p}
	n.token = ec.waitReplica(pools[0].p, pools[0].dir, pools[0].addr)
	ec.waitReplica(pools[1].p, pools[1].dir, pools[1].addr)
	// From here on the workers, the CLI and the client take both.
	n.poolAddr = pools[0].addr + "," + pools[1].addr
	zones := []string{"zone-a", "zone-b"}
	for i := range 4 {
		n.workers = append(n.workers, n.startWorker(fmt.Sprintf("worker_%03d", i+1), "--zone", zones[i%2]))
	}
	n.waitWorkers(4, 60*time.Second)
	c := n.client()
	admin := v1.NewAdminServiceClient(c.Conn())

	// The load: callers of an idempotent function, and pushers of new
	// files and new versions, which remember every version they stored.
	var (
		calls, pushes, retried atomic.Int64
		mu                     sync.Mutex
		failures               []string
		stored                 = map[string][][]byte{} // file id -> versions' bytes, version 1 first
	)
	fail := func(format string, args ...any) {
		mu.Lock()
		defer mu.Unlock()
		failures = append(failures, time.Now().Format("15:04:05.000 ")+fmt.Sprintf(format, args...))
	}
	// Whatever else happens, every version stored reads back (checked
	// before the processes stop): each file keeps its last ten versions
	// (the default retention), and has no other.
	t.Cleanup(func() {
		mu.Lock()
		defer mu.Unlock()
		cctx, ccancel := context.WithTimeout(context.Background(), 3*time.Minute)
		defer ccancel()
		versions := 0
		for id, vs := range stored {
			hist, err := c.History(cctx, id)
			if err != nil {
				t.Errorf("file %s: history: %v", id, err)
				continue
			}
			if want := min(len(vs), quota.DefaultKeepVersions); len(hist) != want || hist[0].Version != int64(len(vs)) {
				t.Errorf("file %s: %d versions, the latest %d; want %d, the latest %d", id, len(hist), hist[0].GetVersion(), want, len(vs))
			}
			for _, h := range hist {
				want := vs[h.Version-1]
				var got bytes.Buffer
				if _, err := c.Download(cctx, id, h.Version, &got); err != nil || !bytes.Equal(got.Bytes(), want) {
					t.Errorf("file %s version %d: %d bytes (want %d), %v", id, h.Version, got.Len(), len(want), err)
				}
				versions++
			}
		}
		t.Logf("%d versions of %d files read back", versions, len(stored))
	})
	stop := make(chan struct{})
	var wg sync.WaitGroup
	for g := range 4 {
		wg.Go(func() {
			for i := 0; ; i++ {
				select {
				case <-stop:
					return
				default:
				}
				cctx, ccancel := context.WithTimeout(ctx, 30*time.Second)
				out, err := c.Call(cctx, "add", g, i)
				ccancel()
				calls.Add(1)
				if err != nil || string(out) != fmt.Sprint(g+i) {
					fail("call add %d %d: %s, %v", g, i, out, err)
				}
			}
		})
	}
	for g := range 2 {
		wg.Go(func() {
			var mine []string
			for i := 0; ; i++ {
				select {
				case <-stop:
					return
				case <-time.After(20 * time.Millisecond):
				}
				data := randomBytes(1 + rand.IntN(48<<10))
				var id string
				revise := i%3 != 0 && len(mine) > 0
				if revise {
					id = mine[rand.IntN(len(mine))]
				}
				for {
					cctx, ccancel := context.WithTimeout(ctx, 30*time.Second)
					var info *taskworker.FileInfo
					var err error
					if revise {
						mu.Lock()
						version := int64(len(stored[id]))
						mu.Unlock()
						info, err = c.Revise(cctx, id, data, version)
					} else {
						info, err = c.Push(cctx, fmt.Sprintf("load-%d-%d.bin", g, i), data)
					}
					ccancel()
					pushes.Add(1)
					if err != nil && taskworker.NotCarriedOut(err) {
						// The library says nothing was stored.
						if retried.Add(1) <= 3 {
							t.Logf("%s push (revise %v) not carried out, sent again: %v", time.Now().Format("15:04:05.000"), revise, err)
						}
						time.Sleep(50 * time.Millisecond)
						continue
					}
					if err != nil {
						fail("push (revise %v) of %d bytes: %v", revise, len(data), err)
						break
					}
					mu.Lock()
					if want := int64(len(stored[info.FileId]) + 1); info.Version != want {
						fail("file %s stored as version %d, want %d", info.FileId, info.Version, want)
					}
					stored[info.FileId] = append(stored[info.FileId], data)
					mu.Unlock()
					if !revise {
						mine = append(mine, info.FileId)
					}
					break
				}
			}
		})
	}
	stopLoad := sync.OnceFunc(func() {
		close(stop)
		wg.Wait()
	})
	t.Cleanup(stopLoad)

	// progress waits until the load has made more calls and pushes, so that
	// each step happens under load.
	progress := func(what string) {
		t.Helper()
		c0, p0 := calls.Load(), pushes.Load()
		deadline := time.Now().Add(60 * time.Second)
		for calls.Load() < c0+50 || pushes.Load() < p0+5 {
			if time.Now().After(deadline) {
				t.Fatalf("%s: the load stalled: %d calls and %d pushes in a minute", what, calls.Load()-c0, pushes.Load()-p0)
			}
			time.Sleep(20 * time.Millisecond)
		}
	}
	// stopGracefully SIGTERMs a process and waits until it exits.
	stopGracefully := func(p *proctest.Process) {
		t.Helper()
		t.Logf("%s SIGTERM %s", time.Now().Format("15:04:05.000"), p.Name)
		if err := p.Signal(syscall.SIGTERM); err != nil {
			t.Fatal(err)
		}
		select {
		case <-p.Done():
		case <-time.After(60 * time.Second):
			t.Fatalf("%s did not exit within a minute of SIGTERM", p.Name)
		}
		if code := p.ExitCode(); code != 0 {
			t.Errorf("%s exited %d after SIGTERM", p.Name, code)
		}
	}
	progress("before the restarts")

	// Each pool in turn: it must serve, and take this client's calls,
	// before the next one stops.
	for _, r := range pools {
		stopGracefully(r.p)
		progress(r.name + " stopped")
		if err := r.p.Start(); err != nil {
			t.Fatal(err)
		}
		ec.waitReplica(r.p, r.dir, r.addr)
		waitFor(t, 60*time.Second, r.name+" takes calls again", func() bool {
			return scrapeQuiet("http://"+r.metrics+"/metrics", `taskworker_grpc_requests_total{code="OK",method="/taskworker.v1.RPCService/CallFunction"}`) > 0
		})
		progress(r.name + " restarted")
	}

	// Each worker in turn: registered again, and every file back to full
	// redundancy, before the next one stops.
	for _, w := range n.workers {
		stopGracefully(w)
		progress(w.Name + " stopped")
		if err := w.Start(); err != nil {
			t.Fatal(err)
		}
		waitFor(t, 60*time.Second, w.Name+" registered again", func() bool {
			ws, err := c.Workers(ctx)
			return err == nil && slices.ContainsFunc(ws, func(i *v1.WorkerInfo) bool { return i.WorkerId == w.Name })
		})
		waitFull(t, ctx, admin, w.Name+" restarted")
		progress(w.Name + " restarted")
	}

	// One etcd member lost, and back.
	ec.members[2].Kill()
	for range 3 {
		progress("etcd member 3 lost")
	}
	ec.startMember(2)
	progress("etcd member 3 back")

	stopLoad()
	waitFull(t, ctx, admin, "the end")
	mu.Lock()
	defer mu.Unlock()
	if len(failures) > 0 {
		t.Errorf("%d of %d calls and pushes failed; the first ones:\n%s", len(failures), calls.Load()+pushes.Load(), strings.Join(failures[:min(len(failures), 10)], "\n"))
	}
	t.Logf("%d calls, %d pushes (%d retried as not carried out), %d files", calls.Load(), pushes.Load(), retried.Load(), len(stored))
}

// waitFor polls cond until it holds, failing the test after within.
func waitFor(t *testing.T, within time.Duration, what string, cond func() bool) {
	t.Helper()
	deadline := time.Now().Add(within)
	for !cond() {
		if time.Now().After(deadline) {
			t.Fatalf("after %s, still not: %s", within, what)
		}
		time.Sleep(100 * time.Millisecond)
	}
}

// waitFull waits until the pools' status says every file version has its
// full redundancy, with no shard known damaged and no repair pending.
func waitFull(t *testing.T, ctx context.Context, admin v1.AdminServiceClient, when string) {
	t.Helper()
	deadline := time.Now().Add(3 * time.Minute)
	for {
		st, err := admin.Status(ctx, &v1.StatusRequest{})
		var last string
		if err != nil {
			last = status.Convert(err).Message()
		} else {
			last = fmt.Sprintf("%d full, %d reduced, %d lost, %d damaged shards, %d repairs pending", st.FilesFull, st.FilesReduced, st.FilesLost, st.ShardsDamaged, st.RepairsPending)
			if st.FilesReduced == 0 && st.FilesLost == 0 && st.ShardsDamaged == 0 && st.RepairsPending == 0 {
				return
			}
		}
		if time.Now().After(deadline) {
			t.Fatalf("%s: redundancy not full after 3 minutes: %s", when, last)
		}
		time.Sleep(200 * time.Millisecond)
	}
}

// scrapeQuiet is scrape for a pool that may not serve its metrics yet:
// -1 when there is no answer or no such series.
func scrapeQuiet(url, series string) float64 {
	resp, err := http.Get(url)
	if err != nil {
		return -1
	}
	defer resp.Body.Close()
	b, err := io.ReadAll(resp.Body)
	if err != nil {
		return -1
	}
	m := regexp.MustCompile(`(?m)^` + regexp.QuoteMeta(series) + ` ([0-9.e+-]+)$`).FindSubmatch(b)
	if m == nil {
		return -1
	}
	v, _ := strconv.ParseFloat(string(m[1]), 64)
	return v
}
