#!/usr/bin/env bash
# Control-API and envd fuzzing: >= 10,000 malformed requests per run against an in-process airlockd on loopback, a
# process sandbox (or --medium: a container) as the target, a second tenant's sandbox that must stay untouched, host
# sentinel files that traversal paths name. Prints the seed (replay with --seed) and the summary; exits 1 on a 5xx,
# an accepted bad credential, a host or data-dir change, a touched tenant, or airlockd not serving afterwards.
# Usage: sudo bench/reliability/fuzz.sh [--seed N] [--count N] [--medium]   (records output in bench/results/)
set -euo pipefail
source "$(dirname "$0")/common.sh"
args=("$@")
[[ " ${args[*]} " == *" --count "* ]] || args+=(--count 10000)
reliability_run fuzz --fuzz "${args[@]}"
