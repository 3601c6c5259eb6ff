package files_test

import (
	"bytes"
	"testing"
	"time"

	"github.com/hivemind/taskworker/internal/cluster"
	"github.com/hivemind/taskworker/internal/files"
)

// A file of several repair windows whose manifest changes under the
// repairer twice, while later windows' blocks are already being rebuilt:
// each failed compare-and-swap is read again and redone from the window
// that did not commit, and the file ends at full redundancy with its
// bytes intact.
func TestRepairRedoesTheWindowsOfAManifestThatChanged(t *testing.T) {
	c := cluster.New(t, cluster.Options{Workers: 7})
	cl := c.Client(0)
	ctx := ctxTimeout(t, 2*time.Minute)
	data := randomBytes(60*block + 123) // 61 blocks: four windows
	info, err := cl.Push(ctx, "windows", data)
	if err != nil {
		t.Fatal(err)
	}
	commits := files.ChangeManifestBeforeRepairCommits(t, 2)
	c.KillWorker(2)
	waitFor(t, time.Minute, "the file at full redundancy", func() bool {
		st := adminStatus(t, ctx, cl)
		return st.Workers == 6 && st.ShardsRebuilt > 0 && st.RepairsPending == 0 && st.FilesFull == 1
	})
	// One repair, done in one go: the two failed commits, then at least one
	// per window to commit.
	if n := commits.Load(); n < 2+2 {
		t.Fatalf("%d window commits attempted, want the 2 that failed and more", n)
	}
	if st := adminStatus(t, ctx, cl); st.RepairsDone != 1 || st.RepairsFailed != 0 || st.FilesReduced != 0 || st.FilesLost != 0 {
		t.Fatalf("after repair: %+v", st)
	}
	got, err := cl.Get(ctx, info.FileId)
	if err != nil || !bytes.Equal(got, data) {
		t.Fatalf("read back %d bytes, %v; want the %d pushed", len(got), err, len(data))
	}
}
