#!/usr/bin/env bash
# microvm boundary vs raw QEMU in the same run: cold boot, snapshot start, pause/resume, RSS per idle sandbox.
# Usage: sudo bench/microvm.sh   (records output in bench/results/)
set -euo pipefail
cd "$(dirname "$0")/.."
scripts/install-deps.sh
scripts/build.sh
out=bench/results/microvm-$(date -u +%Y%m%d-%H%M).txt
dotnet bench/Airlock.Bench/bin/Release/net10.0/Airlock.Bench.dll --microvm "$@" 2>/dev/null | grep -v '^\s*$' | grep -v ' info:\| warn:' | tee "$out"
