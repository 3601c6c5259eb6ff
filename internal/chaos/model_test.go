package chaos

import (
	"fmt"
	"slices"
	"strings"
	"testing"

	"github.com/anishathalye/porcupine"
)

// op is a history entry for the tests: client, call and return times.
func op(client int, call, ret int64, in Input, out Output) porcupine.Operation {
	return porcupine.Operation{ClientId: client, Input: in, Call: call, Output: out, Return: ret}
}

func TestModel(t *testing.T) {
	const f = "f"
	push := func(call, ret int64, sha string) porcupine.Operation {
		return op(0, call, ret, Input{Op: OpPush, File: f, SHA: sha}, Output{Result: OK, Version: 1})
	}
	revise := func(client int, call, ret int64, sha string, expected int64, out Output) porcupine.Operation {
		return op(client, call, ret, Input{Op: OpRevise, File: f, SHA: sha, Expected: expected}, out)
	}
	get := func(client int, call, ret int64, version int64, sha string) porcupine.Operation {
		return op(client, call, ret, Input{Op: OpGet, File: f}, Output{Result: OK, Version: version, SHA: sha})
	}
	hist := func(client int, call, ret int64, h string) porcupine.Operation {
		return op(client, call, ret, Input{Op: OpHistory, File: f}, historyOutput(h))
	}
	del := func(client int, call, ret int64, r Result) porcupine.Operation {
		return op(client, call, ret, Input{Op: OpDelete, File: f}, Output{Result: r})
	}
	getGone := func(client int, call, ret int64) porcupine.Operation {
		return op(client, call, ret, Input{Op: OpGet, File: f}, Output{Result: NotFound})
	}
	tests := []struct {
		name         string
		history      []porcupine.Operation
		linearizable bool
	}{
		{"push then read", []porcupine.Operation{push(0, 1, "a"), get(1, 2, 3, 1, "a"), hist(1, 4, 5, "1:a")}, true},
		{"read of content never written", []porcupine.Operation{push(0, 1, "a"), get(1, 2, 3, 1, "b")}, false},
		{"a revision lost after its acknowledgement", []porcupine.Operation{
			push(0, 1, "a"), revise(0, 2, 3, "b", 0, Output{Result: OK, Version: 2}), get(1, 4, 5, 1, "a")}, false},
		{"a stale read during a revision", []porcupine.Operation{
			push(0, 1, "a"), revise(0, 2, 6, "b", 0, Output{Result: OK, Version: 2}), get(1, 3, 4, 1, "a")}, true},
		{"two revisions expecting the same version both succeed", []porcupine.Operation{
			push(0, 1, "a"),
			revise(0, 2, 5, "b", 1, Output{Result: OK, Version: 2}),
			revise(1, 3, 6, "c", 1, Output{Result: OK, Version: 3})}, false},
		{"the loser of a compare-and-swap is refused", []porcupine.Operation{
			push(0, 1, "a"),
			revise(0, 2, 5, "b", 1, Output{Result: OK, Version: 2}),
			revise(1, 3, 6, "c", 1, Output{Result: Refused})}, true},
		{"a refusal with nothing to lose to", []porcupine.Operation{
			push(0, 1, "a"), revise(1, 2, 3, "c", 1, Output{Result: Refused})}, false},
		{"an ambiguous revision that took effect", []porcupine.Operation{
			push(0, 1, "a"), revise(0, 2, never, "b", 0, Output{Result: Ambiguous}), get(1, 10, 11, 2, "b")}, true},
		{"an ambiguous revision that did not", []porcupine.Operation{
			push(0, 1, "a"), revise(0, 2, never, "b", 0, Output{Result: Ambiguous}), get(1, 10, 11, 1, "a")}, true},
		{"an ambiguous revision seen, then unseen", []porcupine.Operation{
			push(0, 1, "a"), revise(0, 2, never, "b", 0, Output{Result: Ambiguous}),
			get(1, 10, 11, 2, "b"), get(1, 12, 13, 1, "a")}, false},
		{"a revision that failed definitely did nothing", []porcupine.Operation{
			push(0, 1, "a"), revise(0, 2, 3, "b", 0, Output{Result: Failed}), get(1, 4, 5, 1, "a")}, true},
		{"a revision that failed definitely read back", []porcupine.Operation{
			push(0, 1, "a"), revise(0, 2, 3, "b", 0, Output{Result: Failed}), get(1, 4, 5, 2, "b")}, false},
		{"a deleted file answers NotFound", []porcupine.Operation{
			push(0, 1, "a"), del(0, 2, 3, OK), getGone(1, 4, 5), del(1, 6, 7, NotFound)}, true},
		{"a deleted file read back", []porcupine.Operation{push(0, 1, "a"), del(0, 2, 3, OK), get(1, 4, 5, 1, "a")}, false},
		{"a history missing a version", []porcupine.Operation{
			push(0, 1, "a"), revise(0, 2, 3, "b", 0, Output{Result: OK, Version: 2}), hist(1, 4, 5, "1:a")}, false},
		{"a history out of order", []porcupine.Operation{
			push(0, 1, "a"), revise(0, 2, 3, "b", 0, Output{Result: OK, Version: 2}), hist(1, 4, 5, "1:a 2:b")}, false},
	}
	// Retention: after keptVersions+1 versions, FileHistory lists the last
	// keptVersions.
	many := []porcupine.Operation{push(0, 1, "v1")}
	var kept, all []string
	for v := int64(2); v <= keptVersions+1; v++ {
		many = append(many, revise(0, 2*v, 2*v+1, fmt.Sprintf("v%d", v), 0, Output{Result: OK, Version: v}))
	}
	for v := int64(keptVersions + 1); v >= 1; v-- {
		all = append(all, fmt.Sprintf("%d:v%d", v, v))
	}
	kept = all[:keptVersions]
	tests = append(tests,
		struct {
			name         string
			history      []porcupine.Operation
			linearizable bool
		}{"a history of the kept versions", append(slices.Clone(many), hist(1, 100, 101, strings.Join(kept, " "))), true},
		struct {
			name         string
			history      []porcupine.Operation
			linearizable bool
		}{"a history with a version retention dropped", append(slices.Clone(many), hist(1, 100, 101, strings.Join(all, " "))), false},
	)
	model := Model.ToModel()
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			if got := porcupine.CheckOperations(model, tt.history); got != tt.linearizable {
				t.Errorf("linearizable = %t, want %t", got, tt.linearizable)
			}
		})
	}
}

// An ambiguous Revise is resolved by what reads saw: as a success if some
// read saw its content, dropped if the file's final history or the version
// it expected to follow shows it did not happen, bounded by the file's
// acknowledged Delete, left open (never returning) otherwise. A write that
// failed definitely is dropped.
func TestResolve(t *testing.T) {
	amb := func(file, sha string, call int64) porcupine.Operation {
		return op(0, call, call+1, Input{Op: OpRevise, File: file, SHA: sha}, Output{Result: Ambiguous})
	}
	ops := []porcupine.Operation{
		op(0, 0, 1, Input{Op: OpPush, File: "f", SHA: "a"}, Output{Result: OK, Version: 1}),
		amb("f", "seen", 2),
		amb("f", "unseen", 4),
		amb("gone", "x", 6),
		op(0, 6, 7, Input{Op: OpRevise, File: "gone", SHA: "cas", Expected: 1}, Output{Result: Ambiguous}),
		op(1, 7, 8, Input{Op: OpGet, File: "gone"}, Output{Result: OK, Version: 2, SHA: "other"}),
		op(1, 8, 9, Input{Op: OpGet, File: "f"}, Output{Result: Ambiguous}),
		op(1, 10, 12, Input{Op: OpHistory, File: "f"}, historyOutput("2:seen 1:a")),
		op(1, 13, 14, Input{Op: OpPush, SHA: "p"}, Output{Result: Ambiguous}),
		op(1, 14, 15, Input{Op: OpRevise, File: "f", SHA: "refused"}, Output{Result: Failed}),
		op(0, 20, 21, Input{Op: OpPush, File: "d", SHA: "d1"}, Output{Result: OK, Version: 1}),
		amb("d", "before delete", 22),
		op(1, 23, 30, Input{Op: OpDelete, File: "d"}, Output{Result: OK}),
		amb("d", "after delete", 31),
		op(0, 40, 41, Input{Op: OpPush, File: "g", SHA: "g1"}, Output{Result: OK, Version: 1}),
		op(1, 42, never, Input{Op: OpDelete, File: "g"}, Output{Result: Ambiguous}),
		op(0, 43, 44, Input{Op: OpGet, File: "g"}, Output{Result: NotFound}),
		amb("g", "after gone", 45),
	}
	var got []string
	for _, o := range resolve(ops, map[string]bool{"f": true}) {
		in, out := o.Input.(Input), o.Output.(Output)
		ret := fmt.Sprint(o.Return)
		if o.Return == never {
			ret = "never"
		}
		got = append(got, fmt.Sprintf("%s %s %s v%d returns %s", in.Op, in.SHA, out.Result, out.Version, ret))
	}
	want := []string{
		"Push a ok v1 returns 1",
		"Revise seen ok v2 returns 12",
		"Revise x ambiguous v0 returns never",
		"Get  ok v2 returns 8",
		"FileHistory  ok v0 returns 12",
		"Push d1 ok v1 returns 21",
		"Revise before delete ambiguous v0 returns 30",
		"Delete  ok v0 returns 30",
		"Push g1 ok v1 returns 41",
		"Delete  ambiguous v0 returns 44",
		"Get  not found v0 returns 44",
	}
	if fmt.Sprint(got) != fmt.Sprint(want) {
		t.Errorf("resolved:\n%q\nwant\n%q", got, want)
	}
}

func ExampleModel() {
	history := []porcupine.Operation{
		{ClientId: 0, Input: Input{Op: OpPush, File: "f", SHA: "a"}, Call: 0, Output: Output{Result: OK, Version: 1}, Return: 1},
		// Two clients revise version 1 at once; both are told they won.
		{ClientId: 0, Input: Input{Op: OpRevise, File: "f", SHA: "b", Expected: 1}, Call: 2, Output: Output{Result: OK, Version: 2}, Return: 4},
		{ClientId: 1, Input: Input{Op: OpRevise, File: "f", SHA: "c", Expected: 1}, Call: 3, Output: Output{Result: OK, Version: 2}, Return: 5},
	}
	fmt.Println(porcupine.CheckOperations(Model.ToModel(), history))
	// Output: false
}
