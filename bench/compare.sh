#!/usr/bin/env bash
# A/B in one session: this checkout against an earlier commit, alternating rounds on the same machine, so a change is
# judged against noise rather than against figures recorded on another day.
# Usage: sudo bench/compare.sh <base-rev> [rounds]   (records output in bench/results/compare-<date>.txt)
set -euo pipefail
cd "$(dirname "$0")/.."
base=$1; rounds=${2:-2}
scripts/install-deps.sh
scripts/build.sh
old=$(mktemp -d /tmp/airlock-base-XXXXXX)
git worktree add -q --detach "$old" "$base"
trap 'git worktree remove --force "$old"' EXIT
(cd "$old" && scripts/build.sh)
out=bench/results/compare-$(date -u +%Y%m%d-%H%M).txt
{
  echo "# A/B: $(git rev-parse --short HEAD) (new) vs $(git -C "$old" rev-parse --short HEAD) (old), $(date -u '+%Y-%m-%d %H:%M') UTC, $(nproc) cores"
  for round in $(seq 1 "$rounds"); do
    for side in new old; do
      dir=$PWD; [ "$side" = old ] && dir=$old
      echo "== $side round $round microvm"
      (cd "$dir" && dotnet bench/Airlock.Bench/bin/Release/net10.0/Airlock.Bench.dll --microvm --cold-runs 1 --create-runs 5 --pause-runs 8 2>/dev/null | grep -E "snapshot create|^pause|^resume")
      echo "== $side round $round process"
      (cd "$dir" && dotnet bench/Airlock.Bench/bin/Release/net10.0/Airlock.Bench.dll --create-runs 3 --exec-runs 400 --pause-runs 3 2>/dev/null | grep -E "exec round trip|raw bwrap spawn->exit|ratio exec")
    done
  done
} | tee "$out"
