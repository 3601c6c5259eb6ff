package chaos

import (
	"bytes"
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"math/rand/v2"
	"os"
	"path/filepath"
	"runtime"
	"slices"
	"sort"
	"strings"
	"sync"
	"time"

	"github.com/anishathalye/porcupine"

	v1 "github.com/hivemind/taskworker/api/taskworker/v1"
)

// Config configures a run.
type Config struct {
	// Executable is the taskworker binary the pools and workers run.
	Executable string
	// Dir holds the run's data and every process's log (NAME.log).
	Dir string
	// Seed drives every random choice: operations, contents, faults.
	Seed uint64
	// Duration of the faulty phase.
	Duration time.Duration
	// Workers, Clients and Files: worker processes, concurrent clients,
	// and files the clients share.
	Workers, Clients, Files int
	// Faults are the fault classes injected (default AllFaults).
	Faults []Fault
	// LeaseTTL of the workers' registrations.
	LeaseTTL time.Duration
	// Pools is how many pool replicas run behind the balancer (0: two).
	Pools int
	// RepairDeadline bounds the wait, after the faults, for every worker to
	// be back, every file to be readable and at full redundancy.
	RepairDeadline time.Duration
	// Artifacts is where a failing history's visualization is written
	// (default $TASKWORKER_ARTIFACTS, else the system's temporary
	// directory).
	Artifacts string
	// Log receives progress lines (faults, phases); nil discards them.
	Log io.Writer
}

// DefaultConfig returns a configuration for a run of exe with its data in
// dir: six workers (a 4+2 layout), four clients on three files, every
// fault, one minute.
func DefaultConfig(exe, dir string, seed uint64) Config {
	return Config{
		Executable:     exe,
		Dir:            dir,
		Seed:           seed,
		Duration:       time.Minute,
		Workers:        6,
		Clients:        4,
		Files:          3,
		Faults:         AllFaults,
		LeaseTTL:       2 * time.Second,
		RepairDeadline: 3 * time.Minute,
	}
}

// Validate reports a configuration that cannot work, saying what to change.
func (c Config) Validate() error {
	switch {
	case c.Executable == "":
		return errors.New("chaos: no taskworker executable to run")
	case c.Dir == "":
		return errors.New("chaos: no directory for the run's data")
	case c.Duration <= 0:
		return fmt.Errorf("chaos: duration %s must be positive", c.Duration)
	case c.Workers < 3 || c.Workers > 32:
		return fmt.Errorf("chaos: %d workers; run 3 to 32 (one at a time is faulted)", c.Workers)
	case c.Clients < 1 || c.Files < 1:
		return errors.New("chaos: run at least one client on at least one file")
	case c.LeaseTTL < time.Second:
		return fmt.Errorf("chaos: lease TTL %s is below the pool's minimum of 1s", c.LeaseTTL)
	case c.RepairDeadline <= 0:
		return errors.New("chaos: set a repair deadline")
	}
	return nil
}

func (c Config) faultEnabled(f Fault) bool { return slices.Contains(c.Faults, f) }

func (c Config) logf(format string, args ...any) {
	if c.Log != nil {
		fmt.Fprintf(c.Log, "%s "+format+"\n", append([]any{time.Now().Format("15:04:05.000")}, args...)...)
	}
}

// Report is what a run did.
type Report struct {
	Seed uint64
	// Operations is the number recorded; Checked, how many the
	// linearizability check took (failed reads and resolved ambiguous
	// writes are left out, see resolve).
	Operations, Checked int
	// Outcomes counts operations by kind and outcome.
	Outcomes map[string]int
	// Faults counts the faults injected, by class.
	Faults map[Fault]int
	// Files is the number of files at the end, all readable at full
	// redundancy when the run passed.
	Files int
	// Recovery is how long, after the faults, the network took to have
	// every worker back and every file at full redundancy.
	Recovery time.Duration
	// Visualization is the path of the failing history's HTML, if any.
	Visualization string
}

func (r Report) String() string {
	var b strings.Builder
	fmt.Fprintf(&b, "seed %d: %d operations (%d checked), %d files at the end, recovery in %s\n",
		r.Seed, r.Operations, r.Checked, r.Files, r.Recovery.Round(time.Millisecond))
	var faults []string
	for _, f := range AllFaults {
		faults = append(faults, fmt.Sprintf("%s %d", f, r.Faults[f]))
	}
	fmt.Fprintf(&b, "faults: %s\n", strings.Join(faults, ", "))
	keys := make([]string, 0, len(r.Outcomes))
	for k := range r.Outcomes {
		keys = append(keys, k)
	}
	sort.Strings(keys)
	for _, k := range keys {
		fmt.Fprintf(&b, "  %-48s %6d\n", k, r.Outcomes[k])
	}
	return b.String()
}

// Run starts a network in cfg.Dir, runs the clients against it while the
// injector causes faults, then checks: the history is linearizable; every
// file that exists is readable, identical to its last acknowledged version
// and back at full redundancy; no file exists that no Push wrote or that an
// acknowledged Delete removed. Any failure is in the error, which names the
// seed that replays the run.
func Run(ctx context.Context, cfg Config) (rep Report, err error) {
	rep = Report{Seed: cfg.Seed, Faults: map[Fault]int{}}
	if err := cfg.Validate(); err != nil {
		return rep, err
	}
	defer func() {
		if err != nil {
			err = fmt.Errorf("chaos seed %d (replay with the same seed; logs in %s): %w", cfg.Seed, cfg.Dir, err)
		}
	}()
	cfg.logf("starting %d workers and 2 pools in %s (seed %d)", cfg.Workers, cfg.Dir, cfg.Seed)
	c, err := startCluster(ctx, cfg)
	if err != nil {
		return rep, err
	}
	defer c.stop()

	admin, err := c.dial(c.token)
	if err != nil {
		return rep, err
	}
	defer admin.Close()
	token, err := admin.CreateToken(ctx, "chaos", "chaos test")
	if err != nil {
		return rep, fmt.Errorf("creating the clients' token: %w", err)
	}
	user, err := c.dial(token)
	if err != nil {
		return rep, err
	}
	defer user.Close()

	h := newHistory()
	w := newWorkload(cfg, v1.NewFileServiceClient(user.Conn()), h)
	faulty, stop := context.WithTimeout(ctx, cfg.Duration)
	defer stop()
	var wg sync.WaitGroup
	for i := range cfg.Clients {
		conn, err := c.dial(token)
		if err != nil {
			return rep, err
		}
		defer conn.Close()
		rng := rand.New(rand.NewPCG(cfg.Seed, uint64(i)+1))
		wg.Go(func() { w.client(faulty, i, v1.NewFileServiceClient(conn.Conn()), rng) })
	}
	inj := &injector{c: c, rng: rand.New(rand.NewPCG(cfg.Seed, 0)), faults: cfg.Faults, counts: rep.Faults}
	if len(inj.faults) == 0 {
		inj.faults = AllFaults
	}
	injErr := inj.run(faulty)
	wg.Wait()
	rep.Outcomes = w.outcomes
	if injErr != nil {
		return rep, injErr
	}
	cfg.logf("faults over; waiting for recovery")

	recovered := time.Now()
	deadline := recovered.Add(cfg.RepairDeadline)
	if err := c.waitWorkers(ctx, cfg.RepairDeadline); err != nil {
		return rep, err
	}
	final := cfg.Clients // the client id of the final reads
	existing, errs := w.finalReads(ctx, final, deadline)
	rep.Files = len(existing)
	if err := w.waitFullRedundancy(ctx, existing, deadline); err != nil {
		errs = append(errs, err)
	}
	rep.Recovery = time.Since(recovered)

	ops := resolve(h.operations(), existing)
	rep.Operations, rep.Checked = len(h.operations()), len(ops)
	rep.Outcomes = w.outcomes
	cfg.logf("checking %d operations", len(ops))
	model := Model.ToModel()
	checkBy := time.Now().Add(checkTimeout)
	result := porcupine.CheckOperationsTimeout(model, ops, checkTimeout)
	all := artifactPath(cfg, "jsonl")
	if result != porcupine.Ok {
		if derr := dumpHistory(all, ops); derr != nil {
			errs = append(errs, derr)
		}
	}
	switch result {
	case porcupine.Illegal:
		// Visualize only the file that fails: computing the partial
		// linearizations of every file is slow.
		part, text := illegalFile(model, ops, checkBy)
		if len(part) == 0 {
			errs = append(errs, fmt.Errorf("the history is not linearizable; no single file was found illegal within %s; its operations are in %s", checkTimeout, all))
			break
		}
		file := part[0].Input.(Input).File
		_, info := porcupine.CheckOperationsVerbose(model, part, max(time.Until(checkBy), time.Minute))
		path := artifactPath(cfg, "html")
		if verr := porcupine.VisualizePath(model, info, path); verr != nil {
			errs = append(errs, fmt.Errorf("the history of file %s is not linearizable (writing its visualization: %v; all operations in %s):\n%s", file, verr, all, text))
		} else {
			rep.Visualization = path
			errs = append(errs, fmt.Errorf("the history of file %s is not linearizable; see %s (all operations in %s); its operations:\n%s", file, path, all, text))
		}
	case porcupine.Unknown:
		errs = append(errs, fmt.Errorf("the linearizability check did not finish in %s (the operations are in %s): run shorter or with fewer clients", checkTimeout, all))
	}
	return rep, errors.Join(errs...)
}

// illegalFile finds a file whose history is not linearizable, checking the
// files in parallel until the deadline, and returns its operations, sorted
// by call time, and a listing of the first maxListed.
func illegalFile(model porcupine.Model, ops []porcupine.Operation, deadline time.Time) ([]porcupine.Operation, string) {
	parts := model.Partition(ops)
	found := make(chan []porcupine.Operation, len(parts))
	sem := make(chan struct{}, runtime.GOMAXPROCS(0))
	var wg sync.WaitGroup
	for _, part := range parts {
		wg.Go(func() {
			sem <- struct{}{}
			defer func() { <-sem }()
			if left := time.Until(deadline); left > 0 && porcupine.CheckOperationsTimeout(model, part, left) == porcupine.Illegal {
				found <- part
			}
		})
	}
	wg.Wait()
	close(found)
	part, ok := <-found
	if !ok {
		return nil, ""
	}
	sort.Slice(part, func(i, j int) bool { return part[i].Call < part[j].Call })
	var b strings.Builder
	ms := func(t int64) string {
		if t == never {
			return "never"
		}
		return fmt.Sprintf("%.3fs", float64(t)/1e9)
	}
	for i, op := range part {
		if i == maxListed {
			fmt.Fprintf(&b, "  ... and %d more\n", len(part)-i)
			break
		}
		fmt.Fprintf(&b, "  client %d  %s .. %s  %s\n", op.ClientId, ms(op.Call), ms(op.Return), model.DescribeOperation(op.Input, op.Output))
	}
	return part, b.String()
}

const (
	maxListed    = 60
	checkTimeout = 5 * time.Minute
)

func artifactPath(cfg Config, ext string) string {
	dir := cfg.Artifacts
	if dir == "" {
		dir = os.Getenv("TASKWORKER_ARTIFACTS")
	}
	if dir == "" {
		dir = os.TempDir()
	}
	_ = os.MkdirAll(dir, 0o755) // TASKWORKER_ARTIFACTS may not exist yet; a failure shows when the file is written
	return filepath.Join(dir, fmt.Sprintf("taskworker-chaos-%d.%s", cfg.Seed, ext))
}

// dumpHistory writes operations as JSON lines, for a closer look than the
// visualization gives.
func dumpHistory(path string, ops []porcupine.Operation) error {
	var b bytes.Buffer
	enc := json.NewEncoder(&b)
	for _, op := range ops {
		_ = enc.Encode(map[string]any{"client": op.ClientId, "call": op.Call, "return": op.Return,
			"input": op.Input, "output": op.Output})
	}
	return os.WriteFile(path, b.Bytes(), 0o644)
}

// finalReads reads every file once the faults are over, recording the reads
// in the history: FileHistory and Get of every file a Push returned (those
// deleted must answer NotFound), retried until they succeed or the deadline
// passes. It checks the files found that no client was told of: each must
// be the content of a Push that failed ambiguously, never revised. It
// returns the files that exist.
func (w *workload) finalReads(ctx context.Context, client int, deadline time.Time) (map[string]bool, []error) {
	var errs []error
	listed := map[string]bool{}
	for {
		lctx, cancel := context.WithTimeout(ctx, opTimeout)
		resp, err := w.files.List(lctx, &v1.ListRequest{})
		cancel()
		if err == nil {
			for _, f := range resp.Files {
				listed[f.FileId] = true
			}
			if resp.NextPageToken != "" {
				errs = append(errs, errors.New("more than one page of files; the check lists only the first"))
			}
			break
		}
		if time.Now().After(deadline) {
			return nil, []error{fmt.Errorf("listing the files after the faults: %v", err)}
		}
		time.Sleep(200 * time.Millisecond)
	}
	w.mu.Lock()
	files := make([]string, 0, len(w.known))
	for f := range w.known {
		files = append(files, f)
	}
	w.mu.Unlock()
	sort.Strings(files)
	existing := map[string]bool{}
	retry := func(what, file string, read func() (Result, error)) bool {
		for {
			r, err := read()
			if r != Ambiguous && r != Failed {
				return r == OK
			}
			if time.Now().After(deadline) {
				errs = append(errs, fmt.Errorf("file %s: %s still fails after the faults: %v", file, what, err))
				return false
			}
			time.Sleep(200 * time.Millisecond)
		}
	}
	for _, f := range files {
		if w.deleted[f] && listed[f] {
			errs = append(errs, fmt.Errorf("file %s is listed although its Delete was acknowledged", f))
		}
		exists := retry("FileHistory", f, func() (Result, error) {
			_, err := w.history(client, w.files, f)
			return classify(Input{Op: OpHistory}, err), err
		})
		read := retry("Get", f, func() (Result, error) {
			out, err := w.get(client, w.files, f)
			return out.Result, err
		})
		if exists != listed[f] || read != exists {
			errs = append(errs, fmt.Errorf("file %s: listed %t, FileHistory found it %t, Get found it %t", f, listed[f], exists, read))
		}
		if exists {
			existing[f] = true
		}
	}
	for f := range listed {
		if w.known[f] {
			continue
		}
		// A file no client was told of: an ambiguous Push that took effect.
		// Its Push is not in the history (it has no file id), so neither are
		// these reads: they are checked here, not by the model.
		var versions []*v1.FileInfo
		retry("FileHistory", f, func() (Result, error) {
			ctx, cancel := context.WithTimeout(ctx, opTimeout)
			defer cancel()
			resp, err := w.files.FileHistory(ctx, &v1.FileHistoryRequest{FileId: f})
			versions = resp.GetVersions()
			return classify(Input{Op: OpHistory}, err), err
		})
		if len(versions) != 1 || !w.unacknowledged[versions[0].Sha256] {
			errs = append(errs, fmt.Errorf("file %s exists but no Push that failed ambiguously wrote it: versions %v", f, versions))
			continue
		}
		if retry("Get", f, func() (Result, error) {
			ctx, cancel := context.WithTimeout(ctx, opTimeout)
			defer cancel()
			resp, err := w.files.Get(ctx, &v1.GetRequest{FileId: f})
			if err == nil && shaOf(resp.FileData) != versions[0].Sha256 {
				errs = append(errs, fmt.Errorf("file %s reads back as %s, not the %s its history says", f, shaOf(resp.FileData), versions[0].Sha256))
			}
			return classify(Input{Op: OpGet, File: f}, err), err
		}) {
			existing[f] = true
		}
	}
	return existing, errs
}

// waitFullRedundancy waits until every version of every file has every
// shard on a live worker, as FileHistory reports it.
func (w *workload) waitFullRedundancy(ctx context.Context, files map[string]bool, deadline time.Time) error {
	for {
		var short []string
		for f := range files {
			hctx, cancel := context.WithTimeout(ctx, opTimeout)
			resp, err := w.files.FileHistory(hctx, &v1.FileHistoryRequest{FileId: f})
			cancel()
			if err != nil {
				short = append(short, fmt.Sprintf("%s: %v", f, err))
				continue
			}
			for _, v := range resp.Versions {
				if v.Redundancy != v1.Redundancy_REDUNDANCY_FULL {
					short = append(short, fmt.Sprintf("%s v%d: %s", f, v.Version, v.Redundancy))
				}
			}
		}
		if len(short) == 0 {
			return nil
		}
		if time.Now().After(deadline) || ctx.Err() != nil {
			sort.Strings(short)
			return fmt.Errorf("not back to full redundancy after the faults: %s", strings.Join(short, "; "))
		}
		time.Sleep(time.Second)
	}
}
