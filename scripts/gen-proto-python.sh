#!/usr/bin/env bash
# Regenerates the Python stubs in python/taskworker/v1 from api/, with the
# generators Debian 12 ships (apt-get install protobuf-compiler
# protobuf-compiler-grpc): protoc 3.21.12 and grpc_python_plugin 1.51.1.
# The stubs then need python3-protobuf >= 4.21 and python3-grpcio >= 1.51.
# Usage: scripts/gen-proto-python.sh          (rewrite the stubs)
#        scripts/gen-proto-python.sh --check  (fail if they are stale)
set -euo pipefail
cd "$(dirname "$0")/.."

want_protoc="libprotoc 3.21.12"
if [ "$(protoc --version)" != "$want_protoc" ]; then
  echo "need $want_protoc (Debian 12's protobuf-compiler); have $(protoc --version)" >&2
  exit 1
fi
plugin=$(command -v grpc_python_plugin) || { echo "need grpc_python_plugin (Debian 12's protobuf-compiler-grpc)" >&2; exit 1; }

out=python
if [ "${1:-}" = "--check" ]; then
  out=$(mktemp -d)
  trap 'rm -rf "$out"' EXIT
  mkdir -p "$out/taskworker/v1"
fi
protoc -I api --python_out="$out" --grpc_out="$out" --plugin=protoc-gen-grpc="$plugin" api/taskworker/v1/*.proto
if [ "${1:-}" = "--check" ]; then
  for f in "$out"/taskworker/v1/*.py; do
    cmp -s "$f" "python/taskworker/v1/$(basename "$f")" || { echo "python/taskworker/v1/$(basename "$f") is stale: run scripts/gen-proto-python.sh"; exit 1; }
  done
fi
