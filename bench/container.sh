#!/usr/bin/env bash
# container boundary vs raw `runc run` of the same bundle in the same run: create -> first output.
# Usage: sudo bench/container.sh   (records output in bench/results/)
set -euo pipefail
cd "$(dirname "$0")/.."
scripts/install-deps.sh
scripts/build.sh
out=bench/results/container-$(date -u +%Y%m%d-%H%M).txt
dotnet bench/Airlock.Bench/bin/Release/net10.0/Airlock.Bench.dll --container "$@" 2>/dev/null | grep -v '^\s*$' | grep -v ' info:\| warn:' | tee "$out"
