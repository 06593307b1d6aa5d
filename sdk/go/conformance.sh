#!/usr/bin/env bash
# The Go SDK's conformance driver (sdk/CONFORMANCE.md): `build` compiles it, `run` runs it with
# the environment the contract describes.
set -euo pipefail
here=$(cd "$(dirname "${BASH_SOURCE[0]}")" && pwd)
bin=${SDK_BUILD_DIR:-$here/.build}/conformance
case ${1:-} in
build) mkdir -p "$(dirname "$bin")" && (cd "$here" && go build -o "$bin" ./cmd/conformance) ;;
run) exec "$bin" ;;
*) echo "usage: $0 build|run" >&2 && exit 2 ;;
esac
