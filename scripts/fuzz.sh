#!/usr/bin/env bash
# Runs every fuzz target in the tree (each func Fuzz* in a _test.go file) for
# a short while: FUZZTIME each (default 5s; any -fuzztime value, such as 30s
# or 10000x), FUZZJOBS targets at a time (default: the number of CPUs), each
# with one fuzzing worker. The seeds under testdata/fuzz run with every
# `go test`; this looks a little further. A finding fails the script, naming
# the input that failed (written under the package's testdata/fuzz/, where
# `go test` will keep running it once committed) and the command that runs
# it again. An argument, a regular expression, keeps only the targets whose
# "package-dir FuzzName" it matches: scripts/fuzz.sh egress.
set -euo pipefail
cd "$(dirname "$0")/.."
fuzztime=${FUZZTIME:-5s}
jobs=${FUZZJOBS:-$(nproc)}

targets=$(grep -rE --include='*_test.go' --exclude-dir=.git --exclude-dir=testdata -o '^func Fuzz[A-Za-z0-9_]*\(' . |
	sed -E 's|^\./(.*)/[^/]*_test\.go:func (Fuzz[A-Za-z0-9_]*)\($|\1 \2|' | sort -u)
if [ $# -gt 0 ]; then
	targets=$(grep -E -- "$1" <<<"$targets" || true)
fi
[ -n "$targets" ] || { echo "no fuzz targets found" >&2; exit 1; }
echo "fuzzing $(wc -l <<<"$targets") targets for $fuzztime each, $jobs at a time"

work=$(mktemp -d)
trap 'rm -rf "$work"' EXIT

# fuzz runs one target; its output goes to $work/N.log, its verdict to
# $work/N.result. Go's fuzzing coordinator may end a duration-bounded run
# with a bare "context deadline exceeded", no input written, when its
# deadline races a busy worker (go.dev/issue/75804, fixed in Go 1.27). That
# is not a finding: such a run is tried once more, and if it ends so again it
# is reported and passed over.
fuzz() {
	local i=$1 dir=$2 name=$3 log=$work/$1.log start=$SECONDS
	once() { go test -run='^$' -fuzz="^${name}\$" -fuzztime="$fuzztime" -parallel=1 "./$dir" >"$log" 2>&1; }
	spurious() { ! grep -q 'Failing input written' "$log" && grep -qE '^\s+context deadline exceeded$' "$log"; }
	if once || { spurious && once; }; then
		echo "ok   $dir $name ($((SECONDS - start))s)" >"$work/$i.result"
	elif spurious; then
		echo "ok   $dir $name ($((SECONDS - start))s; twice stopped by the coordinator's deadline race, no input failed)" >"$work/$i.result"
	else
		echo "FAIL $dir $name" >"$work/$i.result"
	fi
}

i=0
while read -r dir name; do
	i=$((i + 1))
	while [ "$(jobs -rp | wc -l)" -ge "$jobs" ]; do wait -n || true; done
	fuzz "$i" "$dir" "$name" &
done <<<"$targets"
wait

failed=()
i=0
while read -r dir name; do
	i=$((i + 1))
	result=$(cat "$work/$i.result")
	echo "$result"
	[[ $result == FAIL* ]] || continue
	grep -vE '^fuzz: elapsed' "$work/$i.log" | tail -40
	input=$(sed -nE 's|.*Failing input written to (testdata/fuzz/[^ ]*).*|\1|p' "$work/$i.log" | head -1)
	if [ -n "$input" ]; then
		echo "failing input: $dir/$input"
		echo "run it again:  go test -run='^${name}/$(basename "$input")\$' ./$dir"
		failed+=("$dir $name: $dir/$input")
	else
		failed+=("$dir $name: no input written (see the output above)")
	fi
done <<<"$targets"

if [ ${#failed[@]} -gt 0 ]; then
	echo
	echo "=== fuzz findings ==="
	printf '%s\n' "${failed[@]}"
	exit 1
fi
