# Shared by the reliability scripts: like bench/run.sh (install, build, run one Airlock.Bench mode, record the output
# in bench/results/<name>-<UTC date>.txt), with AIRLOCK_BENCH_NO_BUILD=1 to reuse an existing build (AIRLOCK_BENCH_DLL: another copy).
# Usage: source bench/reliability/common.sh; reliability_run <result-name> [Airlock.Bench arguments...]
reliability_run() {
  local name=$1; shift
  cd "$(dirname "${BASH_SOURCE[0]}")/../.."
  if [ -z "${AIRLOCK_BENCH_NO_BUILD:-}" ]; then
    scripts/install-deps.sh
    scripts/build.sh
  fi
  local out=bench/results/$name-$(date -u +%Y%m%d-%H%M).txt
  echo "# command: bench/reliability/$name.sh $*" > "$out"
  set +e
  dotnet "${AIRLOCK_BENCH_DLL:-bench/Airlock.Bench/bin/Release/net10.0/Airlock.Bench.dll}" "$@" 2>/dev/null | grep -a --line-buffered -v '^\s*$' | grep -a --line-buffered -v ' info:\| warn:\| fail:\|^ X-Injected' | tee -a "$out"
  local status=${PIPESTATUS[0]}
  set -e
  echo "recorded in $out (exit $status)"
  return "$status"
}
