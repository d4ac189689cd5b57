#!/usr/bin/env bash
# Lines airlockd writes to stdout for N control-API requests (200 OK), with the given `airlock serve` options.
# usage: bench/log-lines.sh [N] [cli-dir] [-- serve options...]
# Compares the default request logging with --request-log-level information; prints one line per run.
set -euo pipefail
cd "$(dirname "$0")/.."
n=${1:-1000}; cli=${2:-artifacts/cli}; shift $(( $# >= 2 ? 2 : $# )); [[ ${1:-} == -- ]] && shift
run() {
  local data port out key
  data=$(mktemp -d /tmp/airlock-loglines-XXXXXX); port=$(( 20000 + RANDOM % 20000 )); out=$data.out
  dotnet exec "$cli/airlock.dll" serve --listen "http://127.0.0.1:$port" --data-dir "$data" "$@" >"$out" 2>/dev/null &
  local pid=$!
  for _ in $(seq 300); do [[ -f $data/bootstrap-key ]] && curl -fs "http://127.0.0.1:$port/health" >/dev/null && break; sleep 0.1; done
  key=$(cat "$data/bootstrap-key")
  for _ in $(seq "$n"); do echo "url = \"http://127.0.0.1:$port/v2/sandboxes\""; echo "output = \"/dev/null\""; done > "$data.urls"
  curl -s -H "X-API-Key: $key" -K "$data.urls"
  kill -TERM $pid; wait $pid || true
  echo "$n requests, options [$*]: $(wc -l < "$out") stdout lines"
  rm -rf "$data" "$data.out" "$data.urls"
}
run "$@"
run --request-log-level information "$@"
