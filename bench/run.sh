#!/usr/bin/env bash
# Shared by the bench scripts: install, build, run one benchmark of Airlock.Bench, record its output in bench/results/.
# Usage: bench/run.sh <result-name> [Airlock.Bench arguments...]
set -euo pipefail
cd "$(dirname "$0")/.."
name=$1; shift
scripts/install-deps.sh
scripts/build.sh
out=bench/results/$name-$(date -u +%Y%m%d-%H%M).txt
dotnet bench/Airlock.Bench/bin/Release/net10.0/Airlock.Bench.dll "$@" 2>/dev/null | grep -v '^\s*$' | grep -v ' info:\| warn:' | tee "$out"
