#!/usr/bin/env bash
# Runs the scaling sweeps on a fresh local network and draws them into
# docs/bench/ (or $1): bench call at concurrency 1, 4, 16, 64 and 256, bench
# files at 1 MiB, 64 MiB and 1 GiB, then bench chart. Run it on a quiet machine;
# it takes about five minutes.
set -euo pipefail
cd "$(dirname "$0")/.."
out=${1:-docs/bench}
work=$(mktemp -d)
trap 'kill "${up:-}" 2>/dev/null || true; wait 2>/dev/null || true; rm -rf "$work"' EXIT
go build -o "$work/taskworker" ./cmd/taskworker
tw=$work/taskworker
"$tw" up --dir "$work/net" --listen 127.0.0.1:0 >"$work/up.log" 2>&1 &
up=$!
for _ in $(seq 1 120); do
	grep -qs TASKWORKER_CA "$work/net/env" && break
	sleep 0.5
done
grep -qs TASKWORKER_CA "$work/net/env" || { cat "$work/up.log"; echo "the network did not start" >&2; exit 1; }
export TASKWORKER_HOME=$work/net
record=$work/record.jsonl
"$tw" bench call --concurrency 1,4,16,64,256 --duration 5s --record "$record"
for size in 1MiB 64MiB 1GiB; do
	"$tw" bench files --size "$size" --no-repair --duration 2s --record "$record"
done
cp "$record" "$out/record.jsonl" 2>/dev/null || { mkdir -p "$out" && cp "$record" "$out/record.jsonl"; }
"$tw" bench chart --from "$record" --out "$out"
