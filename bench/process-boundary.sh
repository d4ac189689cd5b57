#!/usr/bin/env bash
# Create -> first output and exec round trip through airlockd vs raw bwrap, same machine, same run.
# Usage: sudo bench/process-boundary.sh   (records output in bench/results/)
set -euo pipefail
cd "$(dirname "$0")/.."
scripts/install-deps.sh
scripts/build.sh
out=bench/results/process-boundary-$(date -u +%Y%m%d-%H%M).txt
dotnet bench/Airlock.Bench/bin/Release/net10.0/Airlock.Bench.dll "$@" 2>/dev/null | grep -v '^\s*$' | grep -v ' info:\| warn:' | tee "$out"
