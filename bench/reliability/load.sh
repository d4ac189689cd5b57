#!/usr/bin/env bash
# Load: 50 process sandboxes x 100 commands, then 10 microVMs x 20 commands, all sandboxes of a kind alive at once;
# zero errors expected. Prints p50/p99 of create and exec with nproc and the date, and the ratio to a baseline taken
# in the same run (raw bwrap spawn, raw QEMU boot). Raises the tenant quota for the run (50 x 512 MiB > 16 GiB).
# Usage: sudo bench/reliability/load.sh [--processes 50] [--process-commands 100] [--vms 10] [--vm-commands 20]
set -euo pipefail
source "$(dirname "$0")/common.sh"
reliability_run load --load "$@"
