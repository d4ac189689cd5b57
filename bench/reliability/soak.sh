#!/usr/bin/env bash
# Pause/resume soak: 100 cycles on a microVM and 100 on a container (alternating frozen and to-disk pauses), a new
# file per cycle through POST /files and an append to one growing file, every checksum compared after every resume.
# A TCG microVM cycle takes seconds: run it in the background (nohup sudo bench/reliability/soak.sh &).
# Usage: sudo bench/reliability/soak.sh [--cycles N] [--boundaries microvm,container]   (records output in bench/results/)
set -euo pipefail
source "$(dirname "$0")/common.sh"
reliability_run soak --soak "$@"
