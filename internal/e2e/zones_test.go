package e2e

import (
	"context"
	"fmt"
	"io/fs"
	"os"
	"path/filepath"
	"strings"
	"testing"
	"time"
)

// Nine workers started with --zone, three per zone: each block of a file
// has its six shards (4+2) spread two per zone, so the loss of a whole zone
// loses two shards of a block, which its parity covers. (Placed without
// regard to zones, a block would be 2-2-2 with odds 27 in 84; all sixteen
// blocks, about one in 8e7.)
func TestZonesSpreadShards(t *testing.T) {
	n := &network{t: t, dir: t.TempDir(), poolAddr: freeAddr(t), poolArgs: []string{"--block-size", "65536"}}
	n.startPool()
	zoneOf := map[string]string{}
	for i := range 9 {
		id := fmt.Sprintf("worker_%03d", i+1)
		zone := []string{"zone-a", "zone-b", "zone-c"}[i%3]
		zoneOf[id] = zone
		n.workers = append(n.workers, n.startWorker(id, "--zone", zone))
	}
	n.waitWorkers(9, 30*time.Second)

	ctx, cancel := context.WithTimeout(context.Background(), time.Minute)
	defer cancel()
	info, err := n.client().Push(ctx, "spread.bin", randomBytes(1<<20))
	if err != nil {
		t.Fatal(err)
	}
	// block -> zone -> shards of that block in the zone.
	perZone := map[string]map[string]int{}
	shards := 0
	for id, zone := range zoneOf {
		root := filepath.Join(n.dir, "workers", id, "shards")
		err := filepath.WalkDir(root, func(path string, d fs.DirEntry, err error) error {
			if err != nil || d.IsDir() || !strings.Contains(path, info.FileId) {
				return err
			}
			block, _, _ := strings.Cut(d.Name(), ".")
			if perZone[block] == nil {
				perZone[block] = map[string]int{}
			}
			perZone[block][zone]++
			shards++
			return nil
		})
		if err != nil && !os.IsNotExist(err) {
			t.Fatal(err)
		}
	}
	if len(perZone) != 16 {
		t.Fatalf("shards of %d blocks of file %s on the workers, want 16", len(perZone), info.FileId)
	}
	for block, zones := range perZone {
		if len(zones) != 3 || zones["zone-a"] != 2 || zones["zone-b"] != 2 || zones["zone-c"] != 2 {
			t.Errorf("block %s: shards per zone %v, want two in each of the three zones", block, zones)
		}
	}
	t.Logf("%d shards of %d blocks, two per zone in each", shards, len(perZone))

	// --zone and a disagreeing --label zone= are refused.
	p := start(t, "bad-zone", nil, "worker", "--id", "worker_bad", "--pool", n.poolAddr, "--zone", "zone-a",
		"--label", "zone=zone-b", "--ca", n.ca(), "--data-dir", t.TempDir())
	select {
	case <-p.Done():
	case <-time.After(20 * time.Second):
		t.Fatal("a worker with --zone zone-a --label zone=zone-b still runs")
	}
	if p.ExitCode() == 0 || !strings.Contains(p.Output(), "disagree") {
		t.Fatalf("exit %d, output:\n%s", p.ExitCode(), p.Output())
	}
}
