#!/usr/bin/env bash
# Regenerates the Go code for api/taskworker/v1/*.proto with pinned generators.
# Usage: scripts/gen-proto.sh          (rewrite the generated files)
#        scripts/gen-proto.sh --check  (fail if the committed files are stale)
set -euo pipefail
cd "$(dirname "$0")/.."

BUF_VERSION=v1.75.0
PROTOC_GEN_GO_VERSION=v1.36.12
PROTOC_GEN_GO_GRPC_VERSION=v1.6.0

export GOBIN="$PWD/.bin"
mkdir -p "$GOBIN"
want="buf@$BUF_VERSION protoc-gen-go@$PROTOC_GEN_GO_VERSION protoc-gen-go-grpc@$PROTOC_GEN_GO_GRPC_VERSION"
if [ "$(cat "$GOBIN/versions" 2>/dev/null)" != "$want" ]; then
  go install "github.com/bufbuild/buf/cmd/buf@$BUF_VERSION"
  go install "google.golang.org/protobuf/cmd/protoc-gen-go@$PROTOC_GEN_GO_VERSION"
  go install "google.golang.org/grpc/cmd/protoc-gen-go-grpc@$PROTOC_GEN_GO_GRPC_VERSION"
  echo "$want" >"$GOBIN/versions"
fi

"$GOBIN/buf" lint
if [ "${1:-}" = "--check" ]; then
  tmp=$(mktemp -d)
  trap 'rm -rf "$tmp"' EXIT
  cp -r api "$tmp/api"
  "$GOBIN/buf" generate
  diff -r "$tmp/api" api || { echo "generated code is stale: run scripts/gen-proto.sh"; exit 1; }
else
  "$GOBIN/buf" generate
fi

# The Python stubs come from the same files.
scripts/gen-proto-python.sh "$@"
