#!/usr/bin/env bash
# Airlock's main job: install what is needed, build, bring airlockd up on loopback with embedded defaults
# (SQLite + bootstrap key in /var/lib/airlock), create a sandbox, run a command in it and stream its output.
set -euo pipefail
cd "$(dirname "$0")"
[ "$(id -u)" = 0 ] || { echo "run as root (sudo ./run.sh)" >&2; exit 1; }
scripts/install-deps.sh
scripts/build.sh

export AIRLOCK_URL=${AIRLOCK_URL:-http://127.0.0.1:8686}
export AIRLOCK_DATA_DIR=${AIRLOCK_DATA_DIR:-/var/lib/airlock}
airlock() { dotnet artifacts/cli/airlock.dll "$@"; }

if ! curl -fsS "$AIRLOCK_URL/health" >/dev/null 2>&1; then
  mkdir -p "$AIRLOCK_DATA_DIR"
  log="$AIRLOCK_DATA_DIR/airlockd.log"
  echo "starting airlockd on $AIRLOCK_URL (log: $log)"
  # The log holds the bootstrap key (printed once): owner-only.
  (umask 077; : > "$log")
  nohup dotnet artifacts/cli/airlock.dll serve --listen "$AIRLOCK_URL" --data-dir "$AIRLOCK_DATA_DIR" >"$log" 2>&1 &
  echo $! > "$AIRLOCK_DATA_DIR/airlockd.pid"
  for _ in $(seq 1 600); do
    curl -fsS "$AIRLOCK_URL/health" >/dev/null 2>&1 && break
    kill -0 "$(cat "$AIRLOCK_DATA_DIR/airlockd.pid")" 2>/dev/null || { cat "$log"; exit 1; }
    sleep 0.2
  done
  grep -i -m1 -A1 "bootstrap API key (shown once)" "$log" || true
fi

airlock doctor
# No options: risk high, a microVM with its own kernel (restored from the template's pre-booted snapshot).
airlock sandbox run -- 'uname -a; id; cat /etc/os-release'
echo "airlockd keeps running (pid $(cat "$AIRLOCK_DATA_DIR/airlockd.pid" 2>/dev/null || echo '?')); stop it with: kill \$(cat $AIRLOCK_DATA_DIR/airlockd.pid)"
