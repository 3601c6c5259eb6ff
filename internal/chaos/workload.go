package chaos

import (
	"context"
	"crypto/sha256"
	"encoding/hex"
	"fmt"
	"math/rand/v2"
	"strings"
	"sync"
	"time"

	"google.golang.org/grpc/codes"
	"google.golang.org/grpc/status"

	v1 "github.com/hivemind/taskworker/api/taskworker/v1"
	"github.com/hivemind/taskworker/internal/serving"
)

// opTimeout bounds each call, so that a call stuck on a stopped worker ends
// (ambiguously) and its client goes on.
const opTimeout = 5 * time.Second

// workload is the clients: each runs random operations on a few files,
// recording them in the history.
type workload struct {
	cfg Config
	// files is the final reads' connection; each client has its own, so
	// that the balancer spreads them over both pools.
	files v1.FileServiceClient
	h     *history

	mu sync.Mutex
	// slots are the files the clients work on: one file id each, "" while
	// the slot's file is deleted and not yet replaced, pushing while a
	// client pushes its replacement.
	slots []string
	// versions is the last version each client saw of a file, for the
	// expected_version of conditional revisions.
	versions map[string]int64
	// known is every file id a Push returned; deleted, those whose Delete
	// was acknowledged.
	known, deleted map[string]bool
	// unacknowledged holds the content of Pushes that failed ambiguously:
	// the file each may have created has an id no one was told.
	unacknowledged map[string]bool
	// outcomes counts operations by kind and outcome (with the code of an
	// ambiguous one), for the report.
	outcomes map[string]int
}

func newWorkload(cfg Config, files v1.FileServiceClient, h *history) *workload {
	return &workload{cfg: cfg, files: files, h: h, slots: make([]string, cfg.Files), versions: map[string]int64{},
		known: map[string]bool{}, deleted: map[string]bool{}, unacknowledged: map[string]bool{}, outcomes: map[string]int{}}
}

// pushing marks a slot whose new file a client is pushing.
const pushing = "pushing"

// client runs operations on files until ctx ends.
func (w *workload) client(ctx context.Context, id int, files v1.FileServiceClient, rng *rand.Rand) {
	seq := 0
	for ctx.Err() == nil {
		seq++
		slot := rng.IntN(len(w.slots))
		w.mu.Lock()
		file := w.slots[slot]
		seen := w.versions[file]
		if file == "" {
			w.slots[slot] = pushing
		}
		w.mu.Unlock()
		switch file {
		case pushing:
			continue
		case "":
			got := w.push(id, files, content(rng, id, seq))
			w.mu.Lock()
			w.slots[slot] = got
			w.mu.Unlock()
			continue
		}
		switch r := rng.IntN(100); {
		case r < 30:
			w.get(id, files, file)
		case r < 45:
			w.revise(id, files, file, content(rng, id, seq), 0)
		case r < 75:
			expected := max(seen, 1)
			if rng.IntN(4) == 0 {
				expected = max(seen-1, 1) // likely stale: the refusal path
			}
			w.revise(id, files, file, content(rng, id, seq), expected)
		case r < 98:
			w.history(id, files, file)
		default: // rarely: an ambiguous write to a file deleted later stays open (see resolve)
			if w.delete(id, files, file) {
				w.mu.Lock()
				if w.slots[slot] == file {
					w.slots[slot] = ""
				}
				w.mu.Unlock()
			}
		}
	}
}

// content returns a write's bytes: a tag unique to the write (so its
// SHA-256 names it), then random bytes. A quarter fit inline in the
// manifest; the others span one to three erasure-coded blocks.
func content(rng *rand.Rand, client, seq int) []byte {
	size := 4097 + rng.IntN(190<<10)
	if rng.IntN(4) == 0 {
		size = 64 + rng.IntN(4<<10-64)
	}
	b := make([]byte, size)
	tag := fmt.Sprintf("client %d write %d\n", client, seq)
	n := copy(b, tag)
	for i := n; i < len(b); i += 8 {
		v := rng.Uint64()
		for j := 0; j < 8 && i+j < len(b); j++ {
			b[i+j] = byte(v >> (8 * j))
		}
	}
	return b
}

func shaOf(b []byte) string {
	s := sha256.Sum256(b)
	return hex.EncodeToString(s[:])
}

// classify turns a call's error into what it tells the caller.
func classify(in Input, err error) Result {
	switch status.Code(err) {
	case codes.OK:
		return OK
	case codes.NotFound:
		return NotFound
	case codes.FailedPrecondition:
		if in.Op == OpRevise && in.Expected != 0 {
			return Refused
		}
	case codes.Aborted:
		if in.Op == OpRevise && in.Expected != 0 {
			return Refused // lost the race to another revision
		}
	}
	// What the codes above say is checked against the model; a write that
	// failed otherwise, before its commit, is known to have done nothing.
	if serving.IsNotCommitted(err) {
		return Failed
	}
	return Ambiguous
}

// record adds an operation to the history and counts its outcome.
func (w *workload) record(client int, in Input, call int64, out Output, err error) {
	w.h.add(client, in, call, out, w.h.now())
	key := in.Op.String() + " " + out.Result.String()
	if out.Result == Ambiguous {
		key += " (" + status.Code(err).String() + ")"
	}
	w.mu.Lock()
	w.outcomes[key]++
	if out.Version > 0 && out.Version > w.versions[in.File] {
		w.versions[in.File] = out.Version
	}
	if out.Result == NotFound && in.File != "" {
		// The file is gone (an ambiguous Delete took effect): its slot
		// takes a new file, so that no file's history grows without end.
		for i, f := range w.slots {
			if f == in.File {
				w.slots[i] = ""
			}
		}
	}
	w.mu.Unlock()
}

func (w *workload) push(client int, files v1.FileServiceClient, data []byte) string {
	ctx, cancel := context.WithTimeout(context.Background(), opTimeout)
	defer cancel()
	in := Input{Op: OpPush, SHA: shaOf(data)}
	call := w.h.now()
	resp, err := files.Push(ctx, &v1.PushRequest{FileData: data, Filename: "chaos"})
	out := Output{Result: classify(in, err)}
	if err == nil {
		in.File, out.Version = resp.FileId, resp.Version
		w.mu.Lock()
		w.known[resp.FileId] = true
		w.mu.Unlock()
	} else if out.Result == Ambiguous {
		w.mu.Lock()
		w.unacknowledged[in.SHA] = true
		w.mu.Unlock()
	}
	w.record(client, in, call, out, err)
	return in.File
}

func (w *workload) revise(client int, files v1.FileServiceClient, file string, data []byte, expected int64) {
	ctx, cancel := context.WithTimeout(context.Background(), opTimeout)
	defer cancel()
	in := Input{Op: OpRevise, File: file, SHA: shaOf(data), Expected: expected}
	call := w.h.now()
	resp, err := files.Revise(ctx, &v1.ReviseRequest{FileId: file, FileData: data, ExpectedVersion: expected})
	out := Output{Result: classify(in, err)}
	if err == nil {
		out.Version = resp.Version
	}
	w.record(client, in, call, out, err)
}

// get reads a file's latest version; it returns the result and the error.
func (w *workload) get(client int, files v1.FileServiceClient, file string) (Output, error) {
	ctx, cancel := context.WithTimeout(context.Background(), opTimeout)
	defer cancel()
	in := Input{Op: OpGet, File: file}
	call := w.h.now()
	resp, err := files.Get(ctx, &v1.GetRequest{FileId: file})
	out := Output{Result: classify(in, err)}
	if err == nil {
		out.Version, out.SHA = resp.Version, shaOf(resp.FileData)
	}
	w.record(client, in, call, out, err)
	return out, err
}

// history lists a file's versions; it returns them and the error.
func (w *workload) history(client int, files v1.FileServiceClient, file string) ([]*v1.FileInfo, error) {
	ctx, cancel := context.WithTimeout(context.Background(), opTimeout)
	defer cancel()
	in := Input{Op: OpHistory, File: file}
	call := w.h.now()
	resp, err := files.FileHistory(ctx, &v1.FileHistoryRequest{FileId: file})
	out := Output{Result: classify(in, err)}
	if err == nil {
		var es []string
		for _, v := range resp.Versions {
			es = append(es, entry(v.Version, v.Sha256))
		}
		out = historyOutput(strings.Join(es, " "))
	}
	w.record(client, in, call, out, err)
	return resp.GetVersions(), err
}

func (w *workload) delete(client int, files v1.FileServiceClient, file string) bool {
	ctx, cancel := context.WithTimeout(context.Background(), opTimeout)
	defer cancel()
	in := Input{Op: OpDelete, File: file}
	call := w.h.now()
	_, err := files.Delete(ctx, &v1.DeleteRequest{FileId: file})
	out := Output{Result: classify(in, err)}
	if err == nil {
		w.mu.Lock()
		w.deleted[file] = true
		w.mu.Unlock()
	}
	w.record(client, in, call, out, err)
	return err == nil
}
