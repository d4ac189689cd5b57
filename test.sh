#!/usr/bin/env bash
# Installs what is needed, builds, and runs every test (unit and integration, real bwrap/netns/nftables/SQLite,
# the real `e2b` npm client). Ends with one summary line: "N passed, N failed, N skipped".
set -uo pipefail
cd "$(dirname "$0")"
[ "$(id -u)" = 0 ] || { echo "run as root (sudo ./test.sh)" >&2; exit 1; }
scripts/install-deps.sh || exit 1
scripts/build.sh || exit 1
(cd tests/Airlock.EndToEnd/e2b && npm ci --no-audit --no-fund --loglevel=error) || exit 1

results=artifacts/test-results
rm -rf "$results"
dotnet test Airlock.slnx -c Release --no-build --logger "trx" --results-directory "$results" -- RunConfiguration.TestSessionTimeout=1500000
status=$?
python3 scripts/summarize-trx.py "$results" || status=1
exit $status
