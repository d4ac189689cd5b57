#!/usr/bin/env bash
# Crash consistency, the full matrix: airlockd SIGKILLs itself (AIRLOCK_FAILPOINT) at every step of create, pause,
# resume and kill on every boundary (process, container, microVM), then the next start must leave nothing behind.
# CI runs the process boundary at every step and container create+pause; this adds resume and kill on container and
# microVM, and the microVM's create+pause (Slow trait).
# Usage: sudo bench/crash-consistency.sh   (records output in bench/results/crash-consistency-<date>.txt)
set -euo pipefail
cd "$(dirname "$0")/.."
scripts/build.sh
out=bench/results/crash-consistency-$(date -u +%Y%m%d-%H%M).txt
{
  echo "# crash consistency, full matrix: $(git rev-parse --short HEAD), $(date -u '+%Y-%m-%d %H:%M') UTC, $(nproc) cores"
  AIRLOCK_CRASH_MATRIX=full dotnet test tests/Airlock.IntegrationTests -c Release --no-build \
    --filter "FullyQualifiedName~CrashConsistencyTests" --logger "console;verbosity=normal" 2>&1 \
    | grep -E "Passed |Failed |Total|Error Message|Assert" || true
} | tee "$out"
