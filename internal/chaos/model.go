package chaos

import (
	"crypto/sha256"
	"fmt"
	"hash/fnv"
	"sort"
	"strings"

	"github.com/anishathalye/porcupine"

	"github.com/hivemind/taskworker/internal/quota"
)

// Op is one kind of FileService operation in a history.
type Op int

const (
	OpPush Op = iota
	OpRevise
	OpGet
	OpDelete
	OpHistory
)

func (o Op) String() string {
	return [...]string{"Push", "Revise", "Get", "Delete", "FileHistory"}[o]
}

// Result is how an operation ended, as far as its caller can tell.
type Result int

const (
	// OK: the call succeeded.
	OK Result = iota
	// NotFound: the file does not exist (never did, or was deleted).
	NotFound
	// Refused: a Revise with expected_version found the file at another
	// version (FailedPrecondition, or Aborted when it lost the race).
	Refused
	// Ambiguous: the call failed in a way that does not say whether it took
	// effect (Unavailable, DeadlineExceeded, a broken connection, ...).
	Ambiguous
	// Failed: a write the server said did not take effect (its status is
	// marked serving.NotCommitted), or a read that failed.
	Failed
)

func (r Result) String() string {
	return [...]string{"ok", "not found", "refused", "ambiguous", "failed"}[r]
}

// Input is an operation as called. Files are named by their id; content by
// its SHA-256 (hex), which is unique per write because every write's bytes
// start with a tag of its own.
type Input struct {
	Op       Op
	File     string
	SHA      string // Push, Revise: the content written
	Expected int64  // Revise: expected_version (0: unconditional)
}

// Output is what the caller saw.
type Output struct {
	Result  Result
	Version int64  // Push, Revise, Get: the version written or read
	SHA     string // Get: the SHA-256 of the bytes read
	// History: FileHistory's versions, newest first, as "v:sha" joined by
	// spaces; Chain is its digest (see historyOutput).
	History string
	Chain   [32]byte
}

// historyOutput is the Output of a successful FileHistory.
func historyOutput(history string) Output {
	out := Output{Result: OK, History: history}
	es := splitHistory(history)
	for i := len(es) - 1; i >= 0; i-- {
		out.Chain = chain(out.Chain, es[i].version, es[i].sha)
	}
	return out
}

// chain digests a file's history: each version's digest covers the one
// before, so two histories have the same digest only if they list the same
// versions with the same contents in the same order. It keeps the model's
// state small and comparable however many versions a file has.
func chain(prev [32]byte, version int64, sha string) [32]byte {
	return sha256.Sum256(fmt.Appendf(prev[:], " %d:%s", version, sha))
}

// keptVersions is how many versions of a file FileHistory lists: the
// pool's default retention, which the chaos network keeps.
const keptVersions = quota.DefaultKeepVersions

// fileState is the model's state of one file. It is comparable, so the
// checker's cache can use it directly.
type fileState struct {
	Created bool // pushed at some point (ids are never reused)
	Exists  bool // created and not deleted
	Version int64
	Latest  string // the SHA-256 of the latest version
	// Kept holds the SHA-256 of the versions retention keeps, newest
	// first, and Chain their digest, as historyOutput's.
	Kept  [keptVersions]string
	Chain [32]byte
}

// next is s with a new version of content sha, the oldest kept one
// dropped once there are more than keptVersions.
func (s fileState) next(sha string) fileState {
	s.Version++
	s.Latest = sha
	copy(s.Kept[1:], s.Kept[:keptVersions-1])
	s.Kept[0] = sha
	s.Chain = [32]byte{}
	for i := min(s.Version, keptVersions) - 1; i >= 0; i-- {
		s.Chain = chain(s.Chain, s.Version-i, s.Kept[i])
	}
	return s
}

// apply returns the state after in took effect successfully, and whether it
// could have (a Revise that expected another version, or any write to a
// missing file, cannot).
func apply(s fileState, in Input) (fileState, bool) {
	switch in.Op {
	case OpPush:
		if s.Created {
			return s, false
		}
		return fileState{Created: true, Exists: true}.next(in.SHA), true
	case OpRevise:
		if !s.Exists || (in.Expected != 0 && in.Expected != s.Version) {
			return s, false
		}
		return s.next(in.SHA), true
	case OpDelete:
		if !s.Exists {
			return s, false
		}
		return fileState{Created: true}, true
	}
	return s, true // reads change nothing
}

func entry(version int64, sha string) string { return fmt.Sprintf("%d:%s", version, sha) }

// step is the file service's sequential specification: the states that
// could follow s when in was called and out was seen. An ambiguous write
// may or may not have taken effect, so both states follow it.
func step(s fileState, in Input, out Output) []fileState {
	if out.Result == Failed {
		return []fileState{s}
	}
	next, could := apply(s, in)
	if out.Result == Ambiguous {
		if could && next != s {
			return []fileState{s, next}
		}
		return []fileState{s}
	}
	ok := false
	switch in.Op {
	case OpPush:
		ok = out.Result == OK && could && out.Version == 1
	case OpRevise:
		switch out.Result {
		case OK:
			ok = could && out.Version == next.Version
		case NotFound:
			ok = !s.Exists
		case Refused:
			ok = s.Exists && in.Expected != 0 && in.Expected != s.Version
		}
	case OpDelete:
		ok = (out.Result == OK && could) || (out.Result == NotFound && !s.Exists)
	case OpGet:
		ok = (out.Result == OK && s.Exists && out.Version == s.Version && out.SHA == s.Latest) ||
			(out.Result == NotFound && !s.Exists)
	case OpHistory:
		ok = (out.Result == OK && s.Exists && out.Chain == s.Chain) || (out.Result == NotFound && !s.Exists)
	}
	if !ok {
		return nil
	}
	return []fileState{next}
}

// Model is the porcupine model of the FileService, partitioned by file:
// each file is linearizable on its own, and files do not interact.
var Model = porcupine.NondeterministicModel{
	Partition: func(history []porcupine.Operation) [][]porcupine.Operation {
		byFile := map[string][]porcupine.Operation{}
		for _, op := range history {
			f := op.Input.(Input).File
			byFile[f] = append(byFile[f], op)
		}
		files := make([]string, 0, len(byFile))
		for f := range byFile {
			files = append(files, f)
		}
		sort.Strings(files)
		out := make([][]porcupine.Operation, 0, len(files))
		for _, f := range files {
			out = append(out, byFile[f])
		}
		return out
	},
	Init: func() []any { return []any{fileState{}} },
	Step: func(state, input, output any) []any {
		var out []any
		for _, s := range step(state.(fileState), input.(Input), output.(Output)) {
			out = append(out, s)
		}
		return out
	},
	Hash: func(state any) uint64 {
		h := fnv.New64a()
		s := state.(fileState)
		fmt.Fprintf(h, "%t %t %d %x", s.Created, s.Exists, s.Version, s.Chain)
		return h.Sum64()
	},
	DescribeOperation: func(input, output any) string {
		in, out := input.(Input), output.(Output)
		var call string
		switch in.Op {
		case OpPush:
			call = fmt.Sprintf("Push(%s)", short(in.SHA))
		case OpRevise:
			call = fmt.Sprintf("Revise(%s, expected %d)", short(in.SHA), in.Expected)
		default:
			call = in.Op.String() + "()"
		}
		switch {
		case out.Result != OK:
			return call + " -> " + out.Result.String()
		case in.Op == OpGet:
			return fmt.Sprintf("%s -> v%d %s", call, out.Version, short(out.SHA))
		case in.Op == OpHistory:
			return call + " -> " + shortHistory(out.History)
		case in.Op == OpDelete:
			return call + " -> ok"
		}
		return fmt.Sprintf("%s -> v%d", call, out.Version)
	},
	DescribeState: func(state any) string {
		s := state.(fileState)
		switch {
		case !s.Created:
			return "not created"
		case !s.Exists:
			return "deleted"
		}
		return fmt.Sprintf("v%d %s", s.Version, short(s.Latest))
	},
}

func short(sha string) string { return sha[:min(8, len(sha))] }

func shortHistory(h string) string {
	var parts []string
	for _, e := range strings.Fields(h) {
		v, sha, _ := strings.Cut(e, ":")
		parts = append(parts, "v"+v+" "+short(sha))
	}
	return "[" + strings.Join(parts, ", ") + "]"
}
